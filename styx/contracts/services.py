"""Services (``styx serve``): the statuses, SkyPilot's ``service:`` section parsed into a
``ServiceSpec``, and what the service workflow, its activities and the load balancers
exchange.

- ``ServiceName``: checked once where it enters; a replica's cluster is ``<service>-<n>``.
- ``ServiceSpec.parse(section)``: SkyServe's ``service:`` section as SkyPilot writes it
  (``readiness_probe``, ``replicas`` or ``replica_policy``, ``load_balancing_policy``,
  ``ports``), refused with ``InvalidServiceSpec`` naming the field; ``warnings`` for what is
  accepted and ignored.
- ``ServiceStatus`` / ``ReplicaStatus``: what ``styx serve status`` shows.
- ``ServiceInput`` / ``ServiceState`` / ``ReplicaState``: the workflow's input and the state
  it carries across continue-as-new (bounded: at most ``MAX_REPLICAS`` live replicas, a
  service of two versions at a time).
- Activity shapes: ``LaunchReplicaInput``, ``ObserveInput``/``Observation``,
  ``DownReplicaInput``, ``ServiceRecord``.

Plain data: imports nothing of Styx.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass, field
from typing import Any

SERVICE_WORKFLOW = "ServiceWorkflow"

#: The most replicas a service may ask for (``max_replicas``, ``replicas``); a rolling or
#: blue-green update holds at most twice that for a while.
MAX_REPLICAS = 16
#: The most probe headers / bytes of ``post_data`` a readiness probe may carry.
MAX_PROBE_HEADERS = 20
MAX_POST_DATA_BYTES = 16_384
#: How long a replica may stay provisioning (its cluster launching, its job waiting) before it
#: counts as failed.
PROVISION_TIMEOUT_SECONDS = 1800
#: Consecutive failed probes after which a replica that was ready is replaced (SkyServe: 3).
PROBE_FAILURES_TO_REPLACE = 3
#: Replicas that fail in a row, never having been ready, before the service is FAILED (and
#: stops launching more until it is updated).
FAILED_LAUNCHES_TO_GIVE_UP = 3
#: How many service versions the database keeps (older ones no replica runs are removed).
KEPT_VERSIONS = 5


def service_workflow_id(name: str) -> str:
    return f"service/{name}"


def replica_cluster_name(service: str, replica_id: int) -> str:
    return f"{service}-{replica_id}"


class InvalidServiceName(ValueError):
    pass


class ServiceName(str):
    """A service name: a lowercase letter, then up to 39 lowercase letters, digits or '-'
    (so that its replicas' cluster names, ``<name>-<n>``, are valid cluster names)."""

    PATTERN = re.compile(r"[a-z][a-z0-9-]{0,39}")

    def __new__(cls, value: object) -> "ServiceName":
        if not isinstance(value, str) or not cls.PATTERN.fullmatch(value) or value.endswith("-"):
            raise InvalidServiceName(
                f"{value!r} is not a valid service name: use a lowercase letter, then up to 39 "
                "lowercase letters, digits or '-', not ending in '-' (e.g. 'api', 'llm-1')")
        return super().__new__(cls, value)


class ServiceStatus(enum.StrEnum):
    #: No replica is ready yet (the first ones are launching).
    STARTING = "STARTING"
    READY = "READY"
    #: A new version is rolling out; the old one serves meanwhile.
    UPDATING = "UPDATING"
    #: Scaled to zero (``min_replicas: 0`` and no requests).
    NO_REPLICA = "NO_REPLICA"
    #: Replicas keep failing before they are ready: no more are launched until an update.
    FAILED = "FAILED"
    SHUTTING_DOWN = "SHUTTING_DOWN"


class ReplicaStatus(enum.StrEnum):
    #: Its cluster is launching, or its job waits to start.
    PROVISIONING = "PROVISIONING"
    #: Its job runs; the readiness probe has not answered 200 yet.
    STARTING = "STARTING"
    READY = "READY"
    #: Was ready; the last probe failed (replaced after ``PROBE_FAILURES_TO_REPLACE``).
    NOT_READY = "NOT_READY"
    #: Out of the load balancers' set, waiting for requests in flight before it is taken down.
    DRAINING = "DRAINING"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"


#: Replicas the load balancers send requests to.
SERVING: frozenset[ReplicaStatus] = frozenset({ReplicaStatus.READY})


class UpdateMode(enum.StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"


LB_POLICIES = ("round_robin", "least_load")


# --------------------------------------------------------------------------- the service: section


class InvalidServiceSpec(ValueError):
    """``field`` names the task field (``service.replica_policy.min_replicas``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class ReadinessProbe:
    path: str = "/"
    #: JSON body: the probe is then a POST.
    post_data: Any = None
    initial_delay_seconds: int = 1200
    timeout_seconds: int = 15
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceSpec:
    """SkyServe's ``service:`` section, checked, with SkyPilot's defaults filled in."""

    probe: ReadinessProbe = field(default_factory=ReadinessProbe)
    min_replicas: int = 1
    max_replicas: int = 1
    target_qps_per_replica: float | None = None
    upscale_delay_seconds: int = 300
    downscale_delay_seconds: int = 1200
    load_balancing_policy: str = "round_robin"
    #: The port the replicas listen on (``service.ports``, else ``resources.ports``).
    port: int = 0

    @property
    def autoscales(self) -> bool:
        return self.target_qps_per_replica is not None and self.max_replicas > self.min_replicas

    @classmethod
    def parse(cls, section: Any, resources_ports: list[str] | None = None) -> tuple["ServiceSpec", list[str]]:
        """The spec and its warnings (one sentence each, for what is accepted but ignored).
        ``resources_ports`` is the task's ``resources.ports``, where the port is when the
        section names none."""
        if not isinstance(section, dict):
            raise InvalidServiceSpec("service", "a service needs a `service:` section (SkyServe's): "
                                     "readiness_probe and replicas or replica_policy")
        _check_keys("service", section, _SERVICE_KEYS)
        warnings = [f"service.{key}: ignored ({why})" for key, why in _IGNORED.items() if key in section]
        if "tls" in section:
            raise InvalidServiceSpec("service.tls", "TLS at the load balancer is not supported yet; "
                                     "terminate TLS in front of the endpoint")
        spec = cls(probe=_probe(section.get("readiness_probe")))
        if "replicas" in section and "replica_policy" in section:
            raise InvalidServiceSpec("service.replicas", "give either replicas or replica_policy, not both")
        if "replica_policy" in section:
            _policy(spec, section["replica_policy"], warnings)
        elif "replicas" in section:
            spec.min_replicas = spec.max_replicas = _int("service.replicas", section["replicas"], 1, MAX_REPLICAS)
        policy = section.get("load_balancing_policy", "round_robin")
        if policy not in LB_POLICIES:
            raise InvalidServiceSpec("service.load_balancing_policy",
                                     f"{policy!r} is not a policy Styx has (have: {', '.join(LB_POLICIES)})")
        spec.load_balancing_policy = policy
        if section.get("ports") is not None:
            spec.port = _port("service.ports", section["ports"])
        elif resources_ports:
            spec.port = _port("resources.ports", resources_ports[0])
        else:
            raise InvalidServiceSpec("service.ports", "name the port the replicas listen on "
                                     "(service.ports or resources.ports, e.g. `ports: 8080`)")
        return spec, warnings


_SERVICE_KEYS = ("readiness_probe", "replicas", "replica_policy", "load_balancing_policy", "ports", "tls",
                 "controller_resources", "pool", "workers")
_IGNORED = {
    "controller_resources": "Styx has no controller VM: the controller is a workflow",
    "pool": "pools of workers are not supported; the task is served",
    "workers": "pools of workers are not supported; the task is served",
}
_PROBE_KEYS = ("path", "post_data", "initial_delay_seconds", "timeout_seconds", "headers")
_POLICY_KEYS = ("min_replicas", "max_replicas", "target_qps_per_replica", "upscale_delay_seconds",
                "downscale_delay_seconds", "autoscaling_decision_interval", "base_ondemand_fallback_replicas",
                "dynamic_ondemand_fallback", "num_overprovision")
_POLICY_IGNORED = ("autoscaling_decision_interval", "base_ondemand_fallback_replicas",
                   "dynamic_ondemand_fallback", "num_overprovision")


def _check_keys(where: str, data: dict, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else f" (known: {', '.join(known)})"
            raise InvalidServiceSpec(f"{where}.{key}", f"unknown key{hint}")


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidServiceSpec(where, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def _port(where: str, value: Any) -> int:
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidServiceSpec(where, f"a service listens on one port, got {value!r}")
        value = value[0]
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidServiceSpec(where, f"must be one port number (1-65535), got {value!r}")
    return int(text)


def _probe(value: Any) -> ReadinessProbe:
    where = "service.readiness_probe"
    if value is None:
        raise InvalidServiceSpec(where, "required: the path that answers 200 when a replica is ready "
                                 "(e.g. `readiness_probe: /health`)")
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise InvalidServiceSpec(where, f"a path or a mapping with path:, got {value!r}")
    _check_keys(where, value, _PROBE_KEYS)
    path = value.get("path")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 2048 or any(c in path for c in " \r\n"):
        raise InvalidServiceSpec(f"{where}.path", f"must be a URL path starting with '/', got {path!r}")
    probe = ReadinessProbe(path=path)
    if value.get("post_data") is not None:
        import json

        try:
            size = len(json.dumps(value["post_data"]))
        except (TypeError, ValueError):
            raise InvalidServiceSpec(f"{where}.post_data", "must be JSON data") from None
        if size > MAX_POST_DATA_BYTES:
            raise InvalidServiceSpec(f"{where}.post_data", f"is {size} bytes; at most {MAX_POST_DATA_BYTES}")
        probe.post_data = value["post_data"]
    if "initial_delay_seconds" in value:
        probe.initial_delay_seconds = _int(f"{where}.initial_delay_seconds", value["initial_delay_seconds"], 0, 86_400)
    if "timeout_seconds" in value:
        probe.timeout_seconds = _int(f"{where}.timeout_seconds", value["timeout_seconds"], 1, 600)
    headers = value.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_PROBE_HEADERS or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and "\n" not in f"{k}{v}"
            for k, v in headers.items()):
        raise InvalidServiceSpec(f"{where}.headers", f"must map at most {MAX_PROBE_HEADERS} header names "
                                 "to values (one line each)")
    probe.headers = {k: str(v) for k, v in headers.items()}
    return probe


def _policy(spec: ServiceSpec, value: Any, warnings: list[str]) -> None:
    where = "service.replica_policy"
    if not isinstance(value, dict):
        raise InvalidServiceSpec(where, f"a mapping with min_replicas (and max_replicas ...), got {value!r}")
    _check_keys(where, value, _POLICY_KEYS)
    for key in _POLICY_IGNORED:
        if key in value:
            warnings.append(f"{where}.{key}: ignored (spot fallback and overprovisioning are not supported yet; "
                            "autoscaling decides every tick)" if key != "autoscaling_decision_interval" else
                            f"{where}.{key}: ignored (the service workflow decides on every probe round)")
    if "min_replicas" not in value:
        raise InvalidServiceSpec(f"{where}.min_replicas", "required (0 scales to zero when no request comes)")
    spec.min_replicas = _int(f"{where}.min_replicas", value["min_replicas"], 0, MAX_REPLICAS)
    spec.max_replicas = spec.min_replicas
    if value.get("max_replicas") is not None:
        spec.max_replicas = _int(f"{where}.max_replicas", value["max_replicas"], max(1, spec.min_replicas),
                                 MAX_REPLICAS)
    qps = value.get("target_qps_per_replica")
    if qps is not None:
        if isinstance(qps, bool) or not isinstance(qps, (int, float)) or not 0 < qps <= 1e6:
            raise InvalidServiceSpec(f"{where}.target_qps_per_replica",
                                     f"must be a number of requests per second above 0, got {qps!r}")
        spec.target_qps_per_replica = float(qps)
    if spec.max_replicas > spec.min_replicas and spec.target_qps_per_replica is None:
        warnings.append(f"{where}.max_replicas: autoscaling needs target_qps_per_replica; "
                        f"{spec.min_replicas} replica(s) are kept")
    if spec.min_replicas == 0 and spec.target_qps_per_replica is None:
        raise InvalidServiceSpec(f"{where}.target_qps_per_replica",
                                 "required with min_replicas: 0 (scaling up from zero follows requests)")
    for key in ("upscale_delay_seconds", "downscale_delay_seconds"):
        if key in value:
            setattr(spec, key, _int(f"{where}.{key}", value[key], 0, 86_400))


# --------------------------------------------------------------------------- the workflow


@dataclass
class ServiceTiming:
    """How often the workflow looks, and how the load balancers' counts are read (worker-wide
    settings the API reads and hands in: a workflow reads no environment)."""

    tick_seconds: float = 5.0
    #: The window the request rate is averaged over.
    qps_window_seconds: float = 60.0
    #: How long a replica taken out of the load balancers' set keeps serving requests in
    #: flight before it is taken down (longer than the load balancers' refresh).
    drain_seconds: float = 5.0
    #: Continue-as-new after this many ticks at most (also when Temporal suggests it).
    ticks_per_run: int = 500


@dataclass
class ReplicaState:
    replica_id: int
    cluster: str
    version: int
    status: str = ReplicaStatus.PROVISIONING.value
    #: ISO time (workflow clock) it was launched, became ready, started draining.
    launched_at: str = ""
    ready_at: str = ""
    draining_since: str = ""
    job_id: int | None = None
    endpoint: str = ""
    failures: int = 0
    message: str = ""
    #: Once it was ready: a failure then is replaced without counting as a failed launch.
    was_ready: bool = False


@dataclass
class VersionSpec:
    version: int
    spec: ServiceSpec


@dataclass
class ServiceState:
    version: int
    target_version: int
    specs: list[VersionSpec]
    mode: str = UpdateMode.ROLLING.value
    replicas: list[ReplicaState] = field(default_factory=list)
    next_replica_id: int = 1
    #: The autoscaler's current target and the one it is waiting to move to (since when).
    target_replicas: int = 1
    pending_target: int | None = None
    pending_since: str = ""
    status: str = ServiceStatus.STARTING.value
    message: str = ""
    failed_launches: int = 0
    shutting_down: bool = False
    qps: float = 0.0


@dataclass
class ServiceInput:
    name: str
    owner: str
    version: int
    spec: ServiceSpec
    lb_port: int
    timing: ServiceTiming = field(default_factory=ServiceTiming)
    #: Carried across continue-as-new.
    state: ServiceState | None = None


@dataclass
class UpdateServiceInput:
    version: int
    spec: ServiceSpec
    mode: str = UpdateMode.ROLLING.value


@dataclass
class ServiceDescription:
    name: str
    status: str
    version: int
    target_version: int
    target_replicas: int
    replicas: list[ReplicaState]
    message: str = ""


# --------------------------------------------------------------------------- activities


@dataclass
class LaunchReplicaInput:
    service: str
    owner: str
    version: int
    replica_id: int
    cluster: str


@dataclass
class LaunchReplicaResult:
    job_id: int | None
    #: Why it could not be launched (a quota, a refusal): the replica is failed at once.
    error: str = ""


@dataclass
class ProbeTarget:
    replica_id: int
    cluster: str
    job_id: int | None
    probe: ReadinessProbe
    port: int


@dataclass
class ObserveInput:
    service: str
    targets: list[ProbeTarget]
    qps_window_seconds: float = 60.0


@dataclass
class ReplicaProbe:
    replica_id: int
    #: "provisioning" (cluster or job not started), "running" (its job runs), "gone" (its
    #: cluster or job ended: it will never serve).
    phase: str
    ready: bool = False
    endpoint: str = ""
    message: str = ""


@dataclass
class Observation:
    probes: list[ReplicaProbe]
    qps: float = 0.0


@dataclass
class DownReplicaInput:
    cluster: str


@dataclass
class ServiceRecord:
    """The service's row and its replicas' rows, written whole (at most ``2*MAX_REPLICAS``)."""

    name: str
    status: str
    version: int
    target_version: int
    target_replicas: int
    replicas: list[ReplicaState]
    message: str = ""
    qps: float = 0.0
    #: The versions still run by a replica: the others are pruned (keeping ``KEPT_VERSIONS``).
    live_versions: list[int] = field(default_factory=list)


@dataclass
class ForgetServiceInput:
    name: str
