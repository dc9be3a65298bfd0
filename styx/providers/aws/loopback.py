"""Emulated instances reached through local nodes (``STYX_AWS_LOOPBACK_NODES=1``).

The emulator hands out ``10.x``/``54.x`` addresses that belong to nobody. With a loopback
mapping (the worker's local provider), each instance's SSH endpoint is the local node
``aws-<instance-id>`` on 127.x, and stopping/starting/terminating the instance does the same
to that node. The node's ``ip`` field keeps the instance's private IP for display;
``loopback_ip`` is the address nodes really reach each other on. When the EC2 endpoint is a
loopback URL (an emulator) and no mapping is configured, the provider refuses to launch or
connect rather than dial emulated addresses (``endpoint_is_emulator``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from styx.providers.aws.errors import ProvisionError
from styx.providers.base import Provider

__all__ = ["LoopbackNodes", "endpoint_is_emulator", "is_loopback_host"]

#: Where boto3 reads an endpoint override from.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_is_emulator(endpoint_url: str | None = None) -> bool:
    """True if the EC2 endpoint (from the environment, or ``endpoint_url``) is on loopback."""
    urls = [os.environ.get(var, "") for var in ENDPOINT_VARIABLES] + [endpoint_url or ""]
    return any(is_loopback_host(urlparse(url).hostname) for url in urls)


class LoopbackNodes:
    """Instances as local nodes named ``aws-<instance-id>`` of ``local`` (a ``Provider``)."""

    def __init__(self, local: Provider) -> None:
        self.local = local

    @staticmethod
    def node_name(instance_id: str) -> str:
        return f"aws-{instance_id}"

    async def endpoint(self, instance: dict[str, Any], rank: int, *, fresh: bool, ssh_user: str) -> dict[str, Any]:
        """The SSH endpoint of ``instance``: its local node, started (``fresh``: provisioned)."""
        iid = instance["InstanceId"]
        name = self.node_name(iid)
        up = await (self.local.provision(name, 1, {}) if fresh else self.local.start(name, None))
        endpoint = dict(up.nodes[0])
        if not is_loopback_host(endpoint.get("host")):
            raise ProvisionError(f"loopback node for {iid} is not on a loopback address: {endpoint.get('host')}",
                                 "LoopbackMappingInvalid")
        return {"rank": rank, "host": endpoint["host"], "port": int(endpoint["port"]),
                "user": endpoint.get("user") or ssh_user, "ip": instance.get("PrivateIpAddress") or endpoint.get("ip"),
                "host_key": endpoint.get("host_key"), "instance_id": iid,
                "loopback_ip": endpoint.get("ip") or endpoint["host"]}

    async def stop(self, instance_ids: Iterable[str]) -> None:
        for iid in instance_ids:
            await self.local.stop(self.node_name(iid), None)

    async def terminate(self, instance_ids: Iterable[str]) -> None:
        for iid in instance_ids:
            await self.local.terminate(self.node_name(iid), None)
