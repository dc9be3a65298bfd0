"""`styx show-gpus / show-instances / cost-report`, and how `styx launch --dryrun` prints its
plan. Through the SDK, as every command."""

from __future__ import annotations

from typing import Optional

import typer

from styx.cli.console import Table, api, console, esc
from styx.contracts.rest_costs import CatalogOffer, LaunchPlanInfo

app = typer.Typer()


def _price(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def print_plan(plan: LaunchPlanInfo) -> None:
    """What `launch --dryrun` shows."""
    chosen = plan.chosen
    if plan.provider != "aws":
        console.print(f"[bold]{esc(plan.provider)}[/]: {plan.num_nodes} node(s), {_price(plan.hourly_total)}/hour"
                      + (f" — {esc(plan.note)}" if plan.note else ""))
    else:
        accel = ", ".join(f"{k}:{v}" for k, v in chosen.accelerators.items()) or "no accelerators"
        market = "spot" if chosen.use_spot else "on-demand"
        console.print(f"[bold]{esc(chosen.instance_type)}[/] in {esc(chosen.zone or chosen.region)} ({market}): "
                      f"{chosen.vcpus:g} vCPUs, {chosen.memory_gib:g} GB, {esc(accel)}")
        console.print(f"{_price(chosen.hourly_price)}/hour per node × {plan.num_nodes} = "
                      f"[bold]{_price(plan.hourly_total)}/hour[/]"
                      + (f"; also tried in {esc(', '.join(chosen.also_in))}" if chosen.also_in else ""))
        if plan.runners_up:
            table = Table("RUNNER-UP", "REGION", "MARKET", "$/HOUR/NODE", "WHY NOT", title="Runners-up")
            for r in plan.runners_up:
                table.add_row(esc(r.instance_type), esc(r.region), "spot" if r.use_spot else "on-demand",
                              _price(r.hourly_price), esc(r.why_not))
            console.print(table)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {esc(warning)}")
    console.print("Nothing was launched (--dryrun).")


def _offers(rows: list[CatalogOffer], title: str) -> None:
    if not rows:
        console.print("Nothing in the catalog matches.")
        return
    table = Table("INSTANCE TYPE", "REGION", "vCPUs", "MEMORY GB", "ACCELERATORS", "$/HOUR", "SPOT $/HOUR", title=title)
    for o in rows:
        accel = f"{o.accelerator_name}:{o.accelerator_count}" if o.accelerator_name else "-"
        table.add_row(esc(o.instance_type), esc(o.region), f"{o.vcpus:g}", f"{o.memory_gib:g}", esc(accel),
                      _price(o.price), _price(o.spot_price))
    console.print(table)


@app.command("show-gpus", rich_help_panel="Prices and costs")
def show_gpus(
    name: Optional[str] = typer.Argument(None, help="an accelerator, e.g. A100 or A100:8 (default: all)"),
    infra: Optional[str] = typer.Option(None, "--infra", help="aws or aws/<region>"),
) -> None:
    """Accelerators in the catalog: counts, instance types, $/hour on-demand and spot.

    Examples:  `styx show-gpus`    `styx show-gpus A100 --infra aws/us-east-1`
    """
    with api() as client:
        rows = client.show_gpus(name, infra)
    _offers(rows, f"{name or 'Accelerators'} (cheapest first)")


@app.command("show-instances", rich_help_panel="Prices and costs")
def show_instances(
    cpus: Optional[str] = typer.Option(None, "--cpus", help="vCPUs: 8 exactly, 8+ at least"),
    memory: Optional[str] = typer.Option(None, "--memory", help="GB: 32 exactly, 32+ at least"),
    infra: Optional[str] = typer.Option(None, "--infra", help="aws or aws/<region>"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="an accelerator, e.g. A10G:1"),
) -> None:
    """Instance types in the catalog, cheapest first.

    Examples:  `styx show-instances --cpus 8+ --memory 32+`    `styx show-instances --infra aws/eu-west-1`
    """
    with api() as client:
        rows = client.show_instances(cpus, memory, infra, gpus)
    _offers(rows, "Instance types (cheapest first)")


@app.command("cost-report", rich_help_panel="Prices and costs")
def cost_report(days: float = typer.Option(30, "--days", help="how many days back")) -> None:
    """What your clusters cost (an admin: everyone's), alive or gone: provider, type, nodes,
    hours up and $ in the window. Local nodes cost 0; SSH pools their `hourly_price`.

    Examples:  `styx cost-report`    `styx cost-report --days 7`
    """
    with api() as client:
        report = client.cost_report(days)
    if not report.clusters:
        console.print(f"No cluster was up in the last {days:g} days.")
        return
    table = Table("CLUSTER", "OWNER", "PROVIDER", "TYPE", "NODES", "STATUS", "UPTIME", "$/HOUR NOW", "COST",
                  title=f"Costs, last {days:g} days")
    for c in report.clusters:
        kind = (c.instance_type or "-") + (" (spot)" if c.use_spot else "")
        table.add_row(esc(c.cluster), esc(c.owner or "(admins)"), esc(c.provider), esc(kind), str(c.nodes),
                      esc(c.status), f"{c.uptime_hours:.1f} h", _price(c.hourly_price), _price(c.cost))
    console.print(table)
    console.print(f"Total: [bold]{_price(report.total)}[/]")
