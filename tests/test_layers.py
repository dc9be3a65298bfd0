"""The package's layers, checked from the source (parsed with ``ast``, never imported).

    contracts      plain data; imports nothing of styx but itself
    files, config  leaves: atomic writes and locks; settings read from the environment
       ^
    workflows      contracts, temporalio and activity definitions; no I/O library
    activities     never workflows, api, cli, sdk
    providers, ssh, db     never workflows, activities, services, api, cli, sdk
    services       never workflows, activities, providers, ssh, api, cli
    api, gitserver never workflows (they start them by type name), activities, providers, ssh, cli
    sdk            only contracts, task, config
    cli            only sdk, contracts, task, config -- and, inside the commands that start
                   a server, that server
    and no import cycles.

Every ``styx.*`` import counts, at module level or inside a function, absolute or relative;
``from styx import x`` means ``styx.x`` when ``x`` is a module. The cycle check counts only
the imports that run when a module is imported: module-level ones outside ``if TYPE_CHECKING:``.
The tree is walked, so the checks follow modules as they move.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

STYX = Path(__file__).resolve().parent.parent / "styx"
STDLIB = "<the standard library>"

#: What each layer may import of styx: "only" these, or "never" these. A module's layer is the
#: longest name here that it falls under; a module under none is checked for cycles only.
LAYERS: dict[str, tuple[str, ...]] = {
    "styx.contracts":  ("only", "styx.contracts"),
    "styx.config":     ("only", "styx.config", "styx.files"),
    "styx.files":      ("only", "styx.files"),
    "styx.task":       ("only", "styx.task", "styx.contracts", "styx.config"),
    "styx.workflows":  ("only", "styx.contracts", "styx.workflows", "styx.activities"),
    "styx.activities": ("never", "styx.workflows", "styx.api", "styx.cli", "styx.sdk"),
    "styx.providers":  ("never", "styx.workflows", "styx.activities", "styx.services", "styx.api", "styx.cli",
                        "styx.sdk"),
    "styx.ssh":        ("never", "styx.workflows", "styx.activities", "styx.services", "styx.api", "styx.cli",
                        "styx.sdk"),
    "styx.db":         ("never", "styx.workflows", "styx.activities", "styx.services", "styx.api", "styx.cli",
                        "styx.sdk"),
    "styx.services":   ("never", "styx.workflows", "styx.activities", "styx.providers", "styx.ssh", "styx.api",
                        "styx.cli"),
    "styx.api":        ("never", "styx.workflows", "styx.activities", "styx.providers", "styx.ssh", "styx.cli"),
    "styx.gitserver":  ("never", "styx.workflows", "styx.activities", "styx.providers", "styx.ssh", "styx.api",
                        "styx.cli"),
    "styx.lb":         ("never", "styx.workflows", "styx.activities", "styx.services", "styx.providers", "styx.ssh",
                        "styx.api", "styx.cli", "styx.sdk"),
    "styx.sdk":        ("only", "styx.sdk", "styx.contracts", "styx.task", "styx.config"),
    "styx.cli":        ("only", "styx.cli", "styx.sdk", "styx.contracts", "styx.task", "styx.config"),
}

#: What each layer may import from outside styx: contracts are plain data, and workflows are
#: replayed, so they hold no I/O client.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "styx.contracts": ("only", STDLIB, "temporalio.common", "pydantic"),
    "styx.workflows": ("never", "boto3", "botocore", "asyncssh", "sqlmodel", "sqlalchemy", "httpx", "fastapi"),
}

#: The CLI commands that start a server, as (module, function): they import it, inside.
SERVER_COMMANDS = {
    ("styx.cli.main", "up"),
    ("styx.cli.main", "worker"),
    ("styx.cli.main", "api"),
    ("styx.cli.main", "lb"),
    ("styx.cli.git", "gitserver"),
}

#: ``styx`` itself holds ``__version__`` and the lazily loaded public names; any layer may use it.
ROOT = "styx"


def _within(name: str, prefix: str) -> bool:
    if prefix == STDLIB:
        return name.split(".")[0] in sys.stdlib_module_names
    return name == prefix or name.startswith(prefix + ".")


def _forbids(rule: tuple[str, ...], name: str) -> bool:
    kind, *prefixes = rule
    inside = any(_within(name, prefix) for prefix in prefixes)
    return not inside if kind == "only" else inside


# ------------------------------------------------------------------------------ reading imports


@dataclass(frozen=True)
class Import:
    module: str      # the importing module
    path: Path
    line: int
    target: str      # the imported module ("styx.db", "httpx", "temporalio.common")
    function: str | None  # the enclosing function's qualified name; None when it runs on import
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def runs_on_import(self) -> bool:
        return self.function is None and not self.type_only

    @property
    def what(self) -> str:
        where = f" in {self.function}()" if self.function else ""
        return f"{self.module}{where} imports {self.target}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


@dataclass(frozen=True)
class Violation:
    imp: Import
    layer: str
    rule: tuple[str, ...]

    def __str__(self) -> str:
        kind, *prefixes = self.rule
        return f"{self.imp}  ({self.layer} imports {kind} {', '.join(prefixes)})"


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package directory ``root`` (named like it), by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path.relative_to(root.parent)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def read_imports(root: Path) -> list[Import]:
    """Every import of every module under ``root``, resolved to the module it names."""
    known = modules(root)
    found: list[Import] = []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]

        def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
            if isinstance(node, ast.Import):
                return [alias.name for alias in node.names]
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join([*base, node.module] if node.module else base)
            else:
                base_name = node.module or ""
            names = [f"{base_name}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in known]
            return submodules if len(submodules) == len(names) else [base_name, *submodules]

        def visit(node: ast.AST, scope: str | None, in_function: bool, type_only: bool) -> None:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                function = scope if in_function else None
                found.extend(Import(module, path, node.lineno, target, function, type_only)
                             for target in targets(node))
                return
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                scope = f"{scope}.{node.name}" if scope else node.name
                in_function = in_function or not isinstance(node, ast.ClassDef)
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for statement in node.body:
                    visit(statement, scope, in_function, True)
                for statement in node.orelse:
                    visit(statement, scope, in_function, type_only)
                return
            for child in ast.iter_child_nodes(node):
                visit(child, scope, in_function, type_only)

        visit(ast.parse((root.parent / path).read_text(), str(path)), None, False, False)
    return found


# ------------------------------------------------------------------------------ the checks


def _layer(module: str, table: dict[str, tuple[str, ...]]) -> str | None:
    matches = [prefix for prefix in table if _within(module, prefix)]
    return max(matches, key=len) if matches else None


def layer_violations(root: Path) -> list[Violation]:
    """Imports that run against the layers."""
    problems = []
    for imp in read_imports(root):
        is_styx = _within(imp.target, ROOT)
        table = LAYERS if is_styx else LIBRARIES
        layer = _layer(imp.module, table)
        if layer is None or imp.target == ROOT or imp.target == "__future__":
            continue
        if is_styx and imp.function is not None and (imp.module, imp.function.split(".")[0]) in SERVER_COMMANDS:
            continue
        if _forbids(table[layer], imp.target):
            problems.append(Violation(imp, layer, table[layer]))
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles among the modules under ``root``, through the imports that run on import: the
    shortest through each module that is on one, as [a, b, ..., a]."""
    known = modules(root)
    graph: dict[str, set[str]] = {module: set() for module in known}
    for imp in read_imports(root):
        if imp.runs_on_import and imp.target in known and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    cycles: dict[frozenset[str], list[str]] = {}
    for group in _strongly_connected(graph):
        if len(group) > 1:
            for member in sorted(group):
                cycle = _shortest_cycle(graph, group, member)
                cycles.setdefault(frozenset(cycle), cycle)
    return list(cycles.values())


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _shortest_cycle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """Breadth first from ``start`` until an edge leads back to it."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & group):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


# ------------------------------------------------------------------------------ tests


def test_every_import_respects_the_layers():
    problems = layer_violations(STYX)
    assert not problems, "imports against the layers:\n" + "\n".join(map(str, problems))


def test_no_module_imports_itself_back_through_others():
    cycles = import_cycles(STYX)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "styx"


def test_the_checks_catch_a_workflow_reaching_the_db_and_a_two_module_cycle(tmp_path):
    styx = _write(tmp_path, {
        "styx/__init__.py": "__version__ = '0'\n",
        "styx/db.py": "import sqlalchemy\n",
        "styx/contracts/__init__.py": "",
        "styx/contracts/shapes.py": "from __future__ import annotations\nimport dataclasses\nimport pydantic\n",
        "styx/contracts/fetch.py": "import httpx\n",
        "styx/workflows/__init__.py": "",
        "styx/workflows/good.py": "from ..contracts import shapes\nfrom styx.activities import ping\n",
        "styx/workflows/bad.py": "from styx import db\n",
        "styx/workflows/io.py": "def run():\n    import httpx\n",
        "styx/activities/__init__.py": "",
        "styx/activities/ping.py": "",
        "styx/a.py": "from styx import b\n",
        "styx/b.py": "from . import a\n",
        "styx/late.py": "def f():\n    from styx import a\n",
        "styx/cli/__init__.py": "",
        "styx/cli/main.py": (
            "from styx import __version__\n"
            "def up():\n    from styx.workers.supervisor import Supervisor\n    from styx import db\n"
            "def doctor():\n    from styx.temporal import connect\n"
        ),
    })
    assert sorted(v.imp.what for v in layer_violations(styx)) == [
        "styx.cli.main in doctor() imports styx.temporal",
        "styx.contracts.fetch imports httpx",
        "styx.workflows.bad imports styx.db",
        "styx.workflows.io in run() imports httpx",
    ]
    assert import_cycles(styx) == [["styx.a", "styx.b", "styx.a"]]


def test_a_type_only_import_is_no_cycle_but_still_a_dependency(tmp_path):
    styx = _write(tmp_path, {
        "styx/__init__.py": "",
        "styx/contracts/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from styx import x\n",
        "styx/x.py": "import styx.contracts\n",
        "styx/cli/__init__.py": "",
        "styx/cli/main.py": "class Commands:\n    def up(self):\n        import styx.db\n",
    })
    assert import_cycles(styx) == []
    assert sorted(v.imp.what for v in layer_violations(styx)) == [
        "styx.cli.main in Commands.up() imports styx.db",  # a method, not the `up` command
        "styx.contracts imports styx.x",
    ]
