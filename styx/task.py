"""The task model: what to run, where, and on how much hardware.

A Styx task is written in SkyPilot's task YAML, so an existing SkyPilot file loads
unchanged. Loading validates everything up front and normalises resource requests
into values a scheduler can use directly; a bad file raises `TaskValidationError`
naming the field path and YAML line of the problem.

>>> from styx.task import Task
>>> task = Task.from_yaml('''
... name: train
... num_nodes: 2
... resources:
...   infra: aws/us-east-1
...   cpus: 4+
...   accelerators: A100:2
... envs:
...   EPOCHS: 3
... secrets:
...   HF_TOKEN: hf_abc
... run: python train.py --epochs $EPOCHS
... ''')
>>> task.resources.cloud, task.resources.region, task.resources.cpus_min()
('aws', 'us-east-1', 4.0)
>>> task.job_accelerators(), task.envs["EPOCHS"]
({'A100': 2}, '3')
>>> task.to_public_dict()["secrets"]
{'HF_TOKEN': '<redacted>'}
>>> task.with_overrides(gpus="H100:8").job_accelerators()
{'H100': 8}
>>> Task.from_yaml("resources: {cpus: four}")
Traceback (most recent call last):
...
styx.task.TaskValidationError: resources.cpus (line 1): cpus must be a positive number, optionally followed by "+" (got 'four')
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    PrivateAttr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from styx.contracts.managed import MAX_PIPELINE_TASKS

__all__ = ["FileMount", "GitWorkdir", "Problem", "Resources", "Task", "TaskValidationError"]

DEFAULT_JOB_CPUS = 0.5  # SkyPilot's CPU demand for a job that asks for no CPUs.
REDACTED = "<redacted>"

KNOWN_CLOUDS = frozenset({
    "aws", "gcp", "azure", "lambda", "oci", "ibm", "scp", "runpod", "fluidstack",
    "paperspace", "cudo", "do", "nebius", "vast", "vsphere", "hyperbolic", "seeweb",
    "primeintellect", "kubernetes", "ssh", "local",
})
_CLOUD_ALIASES = {"k8s": "kubernetes"}
# Clouds whose second infra component is a context / pool name that may contain "/".
_NAMED_POOL_CLOUDS = frozenset({"kubernetes", "ssh"})

_MEMORY_UNITS = {"": 1.0, "b": 2**-30, "k": 2**-20, "kb": 2**-20, "m": 2**-10, "mb": 2**-10,
                 "g": 1.0, "gb": 1.0, "t": 2**10, "tb": 2**10, "p": 2**20, "pb": 2**20}
_AMOUNT_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*(\+?)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACCEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_AUTOSTOP_RE = re.compile(r"^\d+\s*[mhdw]?$", re.IGNORECASE)
_AUTOSTOP_KEYS = ("idle_minutes", "down", "wait_for", "hook", "hook_timeout")

# Bounds on what a task may ask and on what parsing one may cost: a task file is user input
# (an API body, a pushed .styx.yaml), so it is refused in bounded time and memory.
#: Largest task file, in bytes (``STYX_MAX_TASK_BYTES``; 1 MB by default).
MAX_TASK_BYTES = int(os.environ.get("STYX_MAX_TASK_BYTES", str(1 << 20)))
#: Deepest nesting of mappings and lists (SkyPilot's files nest 4 or 5 deep).
MAX_YAML_DEPTH = 64
#: Most values a file may hold once its aliases are expanded (refuses "billion laughs").
MAX_YAML_NODES = 100_000
MAX_NUM_NODES = 10_000
MAX_CPUS = 100_000.0
MAX_MEMORY_GB = 100_000_000.0
MAX_ACCELERATORS = 100_000
#: Smallest share of one accelerator a job may ask for (`T4:0.01`).
MIN_ACCELERATOR_FRACTION = 0.01
#: Most candidates `accelerators` x `any_of` may expand to.
MAX_RESOURCE_CANDIDATES = 256
#: Most paths one file mount's list of sources may name.
MAX_LIST_SOURCES = 1000


# --------------------------------------------------------------------------- errors

class Problem(NamedTuple):
    """One thing wrong with a task: where (dotted field path, YAML line) and what."""

    field: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.field or ""
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class TaskValidationError(ValueError):
    """A task spec is invalid. `field`, `line` describe the first problem (in file order)."""

    def __init__(self, message: str = "", *, field: str | None = None, line: int | None = None,
                 problems: Iterable[Problem] | None = None) -> None:
        self.problems = list(problems) if problems else [Problem(field, line, message)]
        self.field = self.problems[0].field
        self.line = self.problems[0].line
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{len(self.problems)} problems in task:\n{lines}"


class _Invalid(ValueError):
    """Raised inside validators; `subpath` extends pydantic's location (dict keys, items)."""

    def __init__(self, message: str, *subpath: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.subpath = subpath


def _format_path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _did_you_mean(key: object, allowed: Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    hint = f'; did you mean "{matches[0]}"?' if matches else ""
    return f'unknown field "{key}"{hint}'


_FRIENDLY = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


def _problems_from(exc: ValidationError, lines: Mapping[str, int]) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        parts = list(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _Invalid):
            parts += cause.subpath
            message = cause.message
        else:
            message = _FRIENDLY.get(err["type"], err["msg"])
            if err["type"] == "literal_error":
                message = f"must be one of {err['ctx']['expected']}"
            message += f" (got {err['input']!r})"
        line = next((lines[p] for n in range(len(parts), 0, -1)
                     if (p := _format_path(parts[:n])) in lines), None)
        problems.append(Problem(_format_path(parts) or None, line, message))
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


# ------------------------------------------------------------------- value parsers

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def _parse_amount(value: Any, field: str, units: bool) -> tuple[float, bool]:
    """Parse `4`, `"4"`, `"4+"` (and with units, `"64GB"`) into (amount, at_least)."""
    hint = 'a positive number, optionally followed by "+"' if not units else \
        'a positive size in GB like 32, "32+" or "64GB"'
    number = _number(value)
    at_least = False
    if number is None:
        match = _AMOUNT_RE.match(value.strip()) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else ""
        if not match or (unit and not units) or unit not in _MEMORY_UNITS:
            raise _Invalid(f"{field} must be {hint} (got {value!r})")
        number = float(match.group(1)) * _MEMORY_UNITS[unit]
        at_least = bool(match.group(3))
    if number <= 0:
        raise _Invalid(f"{field} must be greater than 0 (got {value!r})")
    limit = MAX_MEMORY_GB if units else MAX_CPUS
    if not math.isfinite(number) or number > limit:
        raise _Invalid(f"{field} must be at most {_fmt(limit)} (got {value!r})")
    return number, at_least


def _parse_accel_spec(spec: Any, count: Any = 1) -> tuple[str, int | float]:
    """Parse one accelerator request, `"A100:2"` / `"A100"` / `"T4:0.5"`, or a name with a
    separate count. Whole counts come back as int, fractions as float."""
    if not isinstance(spec, str):
        raise _Invalid(f"accelerator must be a string like 'A100:2' (got {spec!r})")
    name = spec.strip()
    if ":" in name:
        name, count = (s.strip() for s in name.rsplit(":", 1))
    if not _ACCEL_NAME_RE.match(name):
        raise _Invalid(f"accelerator name is missing or malformed in {spec!r}; expected e.g. 'A100:2'")
    try:
        number = float(count) if not isinstance(count, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number <= 0 or not math.isfinite(number) or number > MAX_ACCELERATORS:
        raise _Invalid(f"accelerator count for {name} must be a positive number up to "
                       f"{MAX_ACCELERATORS} (got {count!r})")
    if number != int(number):
        # A fraction (`T4:0.5`) shares a device: the job holds that much of a node's count.
        if number < MIN_ACCELERATOR_FRACTION:
            raise _Invalid(f"accelerator count for {name} must be at least {MIN_ACCELERATOR_FRACTION} "
                           f"(got {count!r})")
        return name, number
    return name, int(number)


def _parse_accelerators(value: Any) -> tuple[list[tuple[str, int | float]], bool]:
    """Return the accelerator options and whether their order is a preference."""
    if isinstance(value, str):
        return [_parse_accel_spec(value)], True
    if isinstance(value, Mapping):
        if not value:
            raise _Invalid("accelerators mapping is empty")
        options = []
        for key, count in value.items():
            try:
                # `{A100:1, V100:1}` in YAML is a mapping of specs to null: a set of options.
                options.append(_parse_accel_spec(key) if count is None else _parse_accel_spec(key, count))
            except _Invalid as e:
                raise _Invalid(e.message, str(key)) from None
        return options, False
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            raise _Invalid("accelerators list is empty")
        options = []
        for i, item in enumerate(value):
            try:
                options.append(_parse_accel_spec(item))
            except _Invalid as e:
                raise _Invalid(e.message, i) from None
        return options, isinstance(value, list | tuple)
    raise _Invalid(f"accelerators must be like 'A100:2', {{A100: 2}} or a list of those (got {value!r})")


def _cross(options: list[tuple[str, int | float]], candidates: list[Any]) -> list[Any]:
    """Every accelerator option laid over every any_of candidate, without duplicates."""
    product: list[Any] = []
    for name, count in options:
        for candidate in candidates:
            merged = candidate
            if isinstance(candidate, Mapping) and candidate.get("accelerators", candidate.get("gpus")) is None:
                merged = {**candidate, "accelerators": {name: count}}
            if merged not in product:
                product.append(merged)
            if len(product) > MAX_RESOURCE_CANDIDATES:
                raise _Invalid(f"accelerators x any_of makes more than {MAX_RESOURCE_CANDIDATES} "
                               "candidates; list fewer", "any_of")
    return product


def _parse_port_item(item: Any) -> str:
    text = str(item).strip() if not isinstance(item, bool) and isinstance(item, int | str) else None
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text or "")
    if not match:
        raise _Invalid(f"port must be a number or a range like '10000-10010' (got {item!r})")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if not 1 <= low <= 65535 or not 1 <= high <= 65535:
        raise _Invalid(f"port must be between 1 and 65535 (got {item!r})")
    if low > high:
        raise _Invalid(f"port range start is greater than its end (got {item!r})")
    return str(low) if low == high else f"{low}-{high}"


def _canonical_cloud(name: str, field: str) -> str | None:
    cloud = _CLOUD_ALIASES.get(name.strip().lower(), name.strip().lower())
    if cloud == "*":
        return None
    if cloud not in KNOWN_CLOUDS:
        known = sorted(KNOWN_CLOUDS | set(_CLOUD_ALIASES))
        match = difflib.get_close_matches(cloud, known, n=1)
        hint = f'; did you mean "{match[0]}"?' if match else f"; known: {', '.join(known)}"
        raise _Invalid(f'unknown cloud "{name}" in {field}{hint}')
    return cloud


def _parse_infra(infra: str) -> dict[str, str | None]:
    head, _, rest = infra.strip().partition("/")
    cloud = _canonical_cloud(head, "infra")
    if cloud in _NAMED_POOL_CLOUDS:
        parts = [rest] if rest else []
    else:
        parts = rest.split("/") if rest else []
        if len(parts) > 2:
            raise _Invalid(f"infra must be <cloud>[/<region>[/<zone>]] (got {infra!r})")
    if any(not p.strip() for p in parts):
        raise _Invalid(f"infra has an empty component (got {infra!r})")
    region, zone = (parts + [None, None])[:2]
    return {"cloud": cloud, "region": None if region == "*" else region,
            "zone": None if zone == "*" else zone}


def _format_infra(cloud: str | None, region: str | None, zone: str | None) -> str | None:
    if not (cloud or region or zone):
        return None
    text = "k8s" if cloud == "kubernetes" else (cloud or "*")
    if region or zone:
        text += f"/{region or '*'}"
    return f"{text}/{zone}" if zone else text


def _merge_location(data: dict[str, Any]) -> None:
    """Fold `infra` and the legacy `cloud`/`region`/`zone` into one consistent set."""
    infra = data.get("infra")
    location: dict[str, str | None] = {"cloud": None, "region": None, "zone": None}
    if infra is not None:
        if not isinstance(infra, str) or not infra.strip():
            raise _Invalid(f"infra must be a string like 'aws/us-east-1' (got {infra!r})", "infra")
        try:
            location = _parse_infra(infra)
        except _Invalid as e:
            raise _Invalid(e.message, "infra") from None
    for key in ("cloud", "region", "zone"):
        legacy = data.get(key)
        if legacy is None:
            continue
        if not isinstance(legacy, str) or not legacy.strip():
            raise _Invalid(f"{key} must be a string (got {legacy!r})", key)
        try:
            value = _canonical_cloud(legacy, key) if key == "cloud" else legacy.strip()
        except _Invalid as e:
            raise _Invalid(e.message, key) from None
        if location[key] is not None and value != location[key]:
            raise _Invalid(f"{key} {legacy!r} conflicts with infra {infra!r}", key)
        location[key] = value
    data.update(location, infra=_format_infra(**location))


def _parse_env_mapping(value: Any, field: str) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"{field} must be a mapping of NAME: value (got {value!r})")
    result: dict[str, str | None] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise _Invalid(f"{key!r} is not a valid environment variable name "
                           "(letters, digits and _; not starting with a digit)", str(key))
        if item is not None and not isinstance(item, str | int | float | bool):
            raise _Invalid(f"value must be a string, number, boolean or null "
                           f"(got {type(item).__name__}); quote it in YAML", key)
        result[key] = None if item is None else str(item)
    return result


def _join_script(value: Any, field: str) -> str:
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise _Invalid(f"{field} must be a string or a list of strings (got {value!r})")
    return value


# ------------------------------------------------------------------------- models

class _Model(BaseModel):
    """Base: frozen, no extra keys, and a friendly unknown-key check with suggestions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _ALIASES: ClassVar[frozenset[str]] = frozenset()
    _UNSUPPORTED: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, Mapping):
            raise _Invalid(f"must be a mapping (got {type(data).__name__}: {data!r})")
        allowed = set(cls.model_fields) | cls._ALIASES
        for key in data:
            if key in cls._UNSUPPORTED:
                raise _Invalid(f'"{key}" is a SkyPilot feature that Styx does not support yet', key)
            if key not in allowed:
                raise _Invalid(_did_you_mean(key, allowed), str(key))
        return cls._prepare({k: v for k, v in data.items() if v is not None})

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Hook for subclasses to normalise the raw mapping before field validation."""
        return data


class FileMount(_Model):
    """A file mount destination's source: a local path / bucket URI, or a storage spec."""

    source: str | list[str] | None = None
    name: str | None = None
    store: str | None = None
    mode: Literal["MOUNT", "COPY", "MOUNT_CACHED"] | None = None
    persistent: StrictBool | None = None
    config: dict[str, Any] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _upper_mode(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs_something(self) -> FileMount:
        if self.source is None and self.name is None and self.store is None:
            raise _Invalid("a storage file mount needs at least one of source, name or store")
        return self

    @model_serializer(mode="wrap")
    def _short_form(self, handler: Any) -> Any:
        data = {k: v for k, v in handler(self).items() if v is not None}
        return data["source"] if set(data) == {"source"} else data

    @property
    def is_plain_copy(self) -> bool:
        """True for the short `dst: src` form (rsync a local path or copy a bucket URI)."""
        return self.name is None and self.store is None and self.mode is None


class GitWorkdir(_Model):
    """``workdir: {url, ref}``: a git repository the node clones, at ``ref`` (a branch, tag or
    commit; the remote's default branch when absent), into the job's working directory."""

    url: str
    ref: str | None = None

    @field_validator("url", "ref", mode="before")
    @classmethod
    def _git_word(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value  # the type check says what is wrong
        text = value.strip()
        if not text or text.startswith("-") or any(c.isspace() or ord(c) < 32 for c in text):
            what = "a repository URL" if info.field_name == "url" else "a branch, tag or commit"
            raise _Invalid(f"{info.field_name} must be {what}: not empty, no spaces, not starting "
                           f"with '-' (got {value!r})")
        if len(text) > 2048:
            raise _Invalid(f"{info.field_name} is longer than 2048 characters")
        return text


class Resources(_Model):
    """Per-node resource request. Location fields are normalised: `infra` and the legacy
    `cloud`/`region`/`zone` always agree after validation (`k8s` becomes cloud `kubernetes`)."""

    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    cpus: str | None = Field(None, description='Normalised, e.g. "4" or "4+" (at least 4).')
    memory: str | None = Field(None, description='GB, normalised, e.g. "32" or "32+".')
    accelerators: dict[str, int | float] | None = Field(
        None, description="One entry, e.g. {'A100': 8}; a fraction shares a device: {'T4': 0.5}.")
    accelerator_args: dict[str, Any] | None = None
    use_spot: StrictBool | None = None
    disk_size: int | None = Field(None, description="GB.")
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    network_tier: Literal["standard", "best"] | None = None
    image_id: str | dict[str, str] | None = None
    ports: list[str] | None = Field(None, description='e.g. ["8080", "10000-10010"].')
    labels: dict[str, str] | None = None
    job_recovery: str | dict[str, Any] | None = None
    autostop: bool | int | str | dict[str, Any] | None = None
    any_of: list[Resources] | None = None
    ordered: list[Resources] | None = None

    _ALIASES = frozenset({"gpus"})

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "gpus" in data:
            if "accelerators" in data:
                raise _Invalid('give either "gpus" or "accelerators", not both', "gpus")
            data["accelerators"] = data.pop("gpus")
        if "any_of" in data and "ordered" in data:
            raise _Invalid("any_of and ordered cannot be used together", "ordered")
        for key in ("any_of", "ordered"):
            candidates = data.get(key)
            if candidates is None:
                continue
            if not isinstance(candidates, list) or not candidates:
                raise _Invalid(f"{key} must be a non-empty list of resource mappings", key)
            for i, candidate in enumerate(candidates):
                if not isinstance(candidate, Mapping):
                    continue  # the candidate's own validation reports the type
                for nested in ("any_of", "ordered"):
                    if nested in candidate:
                        raise _Invalid(f"{key} candidates cannot contain {nested}", key, i, nested)
                acc_key = "gpus" if "gpus" in candidate else "accelerators"
                if candidate.get(acc_key) is not None:
                    try:
                        options, _ = _parse_accelerators(candidate[acc_key])
                    except _Invalid as e:
                        raise _Invalid(e.message, key, i, acc_key, *e.subpath) from None
                    if len(options) > 1:
                        raise _Invalid(f"{key} candidates take a single accelerator type",
                                       key, i, acc_key)
        if "accelerators" in data:
            try:
                options, ordered = _parse_accelerators(data["accelerators"])
            except _Invalid as e:
                raise _Invalid(e.message, "accelerators", *e.subpath) from None
            if len(options) == 1:
                data["accelerators"] = dict(options)
            elif "ordered" in data:
                raise _Invalid("a choice of several accelerators cannot be combined with ordered; "
                               "put one accelerator in each ordered candidate", "accelerators")
            elif "any_of" in data and ordered:
                raise _Invalid("a preference list of accelerators cannot be combined with any_of; "
                               "give them as a set ({A100, H100}) or one per any_of candidate",
                               "accelerators")
            elif "any_of" in data:
                # SkyPilot: a set of accelerators with any_of means any accelerator of the set
                # with any candidate (a candidate naming its own accelerator keeps it).
                del data["accelerators"]
                data["any_of"] = _cross(options, data["any_of"])
            else:  # SkyPilot semantics: a list is an ordered preference, a set is any_of.
                del data["accelerators"]
                data["ordered" if ordered else "any_of"] = [
                    {"accelerators": {name: count}} for name, count in options]
        _merge_location(data)
        return data

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> str:
        number, at_least = _parse_amount(value, "cpus", units=False)
        return _fmt(number) + ("+" if at_least else "")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        number, at_least = _parse_amount(value, "memory", units=True)
        return _fmt(number) + ("+" if at_least else "")

    @field_validator("disk_size", mode="before")
    @classmethod
    def _disk_size(cls, value: Any) -> int:
        number, at_least = _parse_amount(value, "disk_size", units=True)
        if at_least or number < 1:
            raise _Invalid(f"disk_size must be a whole number of GB, at least 1 (got {value!r})")
        return int(number)

    @field_validator("disk_tier", "network_tier", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> list[str] | None:
        items = value if isinstance(value, list) else [value]
        ports = []
        for i, item in enumerate(items):
            try:
                ports.append(_parse_port_item(item))
            except _Invalid as e:
                raise (_Invalid(e.message, i) if isinstance(value, list) else e) from None
        return ports or None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {k: str(v) if isinstance(v, int | float | bool) else v for k, v in value.items()}

    @field_validator("image_id", mode="before")
    @classmethod
    def _image_id(cls, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            return value
        raise _Invalid(f"image_id must be a string or a mapping of region: image (got {value!r})")

    @field_validator("job_recovery", mode="before")
    @classmethod
    def _job_recovery(cls, value: Any) -> Any:
        if not isinstance(value, str | Mapping):
            raise _Invalid(f"job_recovery must be a strategy name or a mapping (got {value!r})")
        return value

    @field_validator("autostop", mode="before")
    @classmethod
    def _autostop(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, int) and value >= 0):
            return value
        if isinstance(value, str) and _AUTOSTOP_RE.match(value.strip()):
            return value.strip()
        if isinstance(value, Mapping):
            for key in value:
                if key not in _AUTOSTOP_KEYS:
                    raise _Invalid(_did_you_mean(key, _AUTOSTOP_KEYS), str(key))
            return dict(value)
        raise _Invalid("autostop must be true/false, idle minutes (10, '10m', '2h'), "
                       f"or a mapping with idle_minutes/down (got {value!r})")

    def cpus_min(self) -> float | None:
        """Fewest vCPUs that satisfy the request (`"4+"` and `4` both give 4.0)."""
        return float(self.cpus.rstrip("+")) if self.cpus else None

    def memory_min_gb(self) -> float | None:
        """Least memory in GB that satisfies the request."""
        return float(self.memory.rstrip("+")) if self.memory else None

    @property
    def accelerator_name(self) -> str | None:
        return next(iter(self.accelerators), None) if self.accelerators else None

    @property
    def accelerator_count(self) -> int | float:
        return next(iter(self.accelerators.values())) if self.accelerators else 0

    def port_ranges(self) -> list[tuple[int, int]]:
        """Ports as inclusive (low, high) ranges; a single port is (p, p)."""
        ranges = []
        for port in self.ports or []:
            low, _, high = port.partition("-")
            ranges.append((int(low), int(high or low)))
        return ranges

    def candidates(self) -> list[Resources]:
        """The concrete requests to try: each any_of/ordered entry laid over these
        defaults (in order for `ordered`), or just `[self]`."""
        options = self.any_of or self.ordered
        if not options:
            return [self]
        base = self.to_dict()
        base.pop("any_of", None)
        base.pop("ordered", None)
        merged = []
        for option in options:
            overlay = option.to_dict()
            if option.cloud is None and option.infra is not None:  # region/zone only
                overlay["infra"] = _format_infra(self.cloud, option.region, option.zone)
            merged.append(Resources.model_validate({**base, **overlay}))
        return merged

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, minimal form that `Resources.model_validate` accepts back."""
        data = self.model_dump(mode="json", exclude_none=True)
        for key in ("cloud", "region", "zone"):  # carried by `infra`
            data.pop(key, None)
        for key in ("any_of", "ordered"):
            if getattr(self, key) is not None:
                data[key] = [option.to_dict() for option in getattr(self, key)]
        return data


class Task(_Model):
    """A unit of work: setup and run scripts, executed on `num_nodes` nodes."""

    name: str | None = Field(default=None, max_length=255)
    workdir: str | GitWorkdir | None = None
    num_nodes: int = 1
    resources: Resources = Field(default_factory=Resources)
    envs: dict[str, str | None] = Field(default_factory=dict)
    secrets: dict[str, SecretStr | None] = Field(default_factory=dict)
    file_mounts: dict[str, FileMount] = Field(default_factory=dict)
    setup: str | None = None
    run: str | None = None
    config: dict[str, Any] | None = None
    event_callback: str | None = None
    #: SkyServe's section: what ``styx serve up`` serves (``styx.contracts.services.ServiceSpec``);
    #: ``launch`` ignores it with a warning.
    service: dict[str, Any] | None = None

    _UNSUPPORTED = frozenset({"volumes", "pool", "inputs", "outputs", "experimental"})
    #: ``file_mounts`` as written, before ``${VAR}`` substitution and list expansion: an
    #: override of ``envs`` fills the paths in again from it, as SkyPilot does.
    _file_mounts_template: Any = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # The template is how the task was written, not what it is: two tasks that resolve
        # to the same fields are equal (a task equals its own `to_dict` round trip).
        if not isinstance(other, Task):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    # ---- loading

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> Task:
        """Load a task from a YAML file (a path, or a str naming an existing file) or YAML text."""
        if isinstance(source, os.PathLike) or ("\n" not in source and len(source) < 4096
                                                and os.path.isfile(source)):
            text = read_task_file(Path(source))
        else:
            text = source
        data, lines = _load_yaml(text)
        if not isinstance(data, Mapping):
            hint = ""
            if isinstance(source, str) and "\n" not in source and isinstance(data, str):
                hint = f"; no file named {source!r} exists"
            raise TaskValidationError(f"a task must be a YAML mapping (got {type(data).__name__}){hint}",
                                      line=lines.get(""))
        return cls._validate(data, lines)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Build a task from a mapping shaped like the YAML (or from `to_dict`)."""
        return cls._validate(data, {})

    @classmethod
    def from_command(cls, command: str, **overrides: Any) -> Task:
        """A bare-command launch (`styx launch 'echo hi'`); overrides as in `with_overrides`."""
        if not isinstance(command, str) or not command.strip():
            raise TaskValidationError("the command to run must be a non-empty string", field="run")
        task = cls.from_dict({"run": command})
        return task.with_overrides(**overrides) if overrides else task

    @classmethod
    def _validate(cls, data: Any, lines: Mapping[str, int]) -> Task:
        try:
            return cls._build(data)
        except ValidationError as exc:
            raise TaskValidationError(problems=_problems_from(exc, lines)) from None

    @classmethod
    def _build(cls, data: Any) -> Task:
        task = cls.model_validate(data)
        if isinstance(data, Mapping) and isinstance(data.get("file_mounts"), Mapping):
            task._file_mounts_template = _copy_json(data["file_mounts"])
        return task

    # ---- field validation

    @field_validator("num_nodes", mode="before")
    @classmethod
    def _num_nodes(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUM_NODES:
            raise _Invalid(f"num_nodes must be an integer from 1 to {MAX_NUM_NODES} (got {value!r})")
        return value

    @field_validator("setup", "run", mode="before")
    @classmethod
    def _script(cls, value: Any, info: ValidationInfo) -> str:
        return _join_script(value, info.field_name)

    @field_validator("envs", "secrets", mode="before")
    @classmethod
    def _env_mapping(cls, value: Any, info: ValidationInfo) -> dict[str, str | None]:
        values = _parse_env_mapping(value, info.field_name)
        for key, item in values.items():
            if info.field_name == "secrets" and item == REDACTED:
                # A redacted dump fed back in must not silently become the secret's value.
                raise _Invalid(f"secret {key} holds the {REDACTED} placeholder; pass real values "
                               "(Task.to_dict(include_secrets=True)) or null", key)
        return values

    @field_validator("file_mounts", mode="before")
    @classmethod
    def _file_mounts(cls, value: Any, info: ValidationInfo) -> Any:
        """Fill ``${VAR}`` in from ``envs`` (SkyPilot does it at parse time), and turn a list
        of sources into one mount per source, each under the destination directory."""
        if not isinstance(value, Mapping):
            raise _Invalid(f"file_mounts must be a mapping of destination: source (got {value!r})")
        envs = {k: v for k, v in (info.data.get("envs") or {}).items() if v is not None}
        mounts: dict[str, Any] = {}

        def add(dst: str, src: Any, field: str) -> None:
            if dst in mounts:
                raise _Invalid(f"destination {dst!r} is given twice", field)
            mounts[dst] = src

        for raw_dst, raw_src in value.items():
            if not isinstance(raw_dst, str) or not raw_dst.strip():
                raise _Invalid(f"destination must be a non-empty path (got {raw_dst!r})", str(raw_dst))
            dst = _fill_envs(raw_dst, envs)
            src = raw_src if isinstance(raw_src, FileMount) else _fill_envs(raw_src, envs)
            if not isinstance(src, str | list | Mapping | FileMount):
                raise _Invalid(f"source must be a path/URI, a list of them or a storage mapping "
                               f"(got {raw_src!r})", raw_dst)
            sources = src if isinstance(src, list) else None
            if isinstance(src, Mapping) and isinstance(src.get("source"), list) and \
                    not (src.get("name") or src.get("store")) and \
                    str(src.get("mode") or "COPY").upper() == "COPY":
                sources = src["source"]  # no bucket: the same as the short list form
            if sources is None:
                add(dst, {"source": src} if isinstance(src, str) else src, raw_dst)
                continue
            for item in _list_sources(sources, raw_dst):
                add(f"{dst.rstrip('/') or '/'}/{_source_name(item)}".replace("//", "/"), {"source": item},
                    raw_dst)
        return mounts

    @field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, value: Any) -> Any:
        if isinstance(value, str | GitWorkdir):
            return value
        if isinstance(value, Mapping):
            return GitWorkdir.model_validate(value)
        raise _Invalid("workdir must be a directory path or a git repository {url: ..., ref: ...} "
                       f"(got {value!r})")

    @field_validator("service", mode="before")
    @classmethod
    def _service(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Invalid(f"service must be a mapping (SkyServe's service section; got {value!r})")
        return dict(value)

    @field_serializer("secrets")
    def _redact(self, secrets: dict[str, SecretStr | None]) -> dict[str, str | None]:
        return {k: None if v is None else REDACTED for k, v in secrets.items()}

    # ---- views

    def secret_values(self) -> dict[str, str]:
        """The secrets in clear text, for injecting into the job's environment only."""
        return {k: v.get_secret_value() for k, v in self.secrets.items() if v is not None}

    def missing_envs(self) -> list[str]:
        """Names of envs and secrets declared with a null value that must be given at launch."""
        return [k for k, v in {**self.envs, **self.secrets}.items() if v is None]

    def to_dict(self, *, include_secrets: bool) -> dict[str, Any]:
        """JSON-safe dict that `Task.from_dict` turns back into an equal task.

        Without `include_secrets` the secret names are kept with null values, so the
        result still loads but reports them in `missing_envs()` until given again.
        """
        data = self.model_dump(mode="json", exclude_none=True)
        data["resources"] = self.resources.to_dict()
        data["secrets"] = {k: None for k in self.secrets}
        if include_secrets:
            data["secrets"].update(self.secret_values())
        return {k: v for k, v in data.items() if v != {}}

    def to_public_dict(self) -> dict[str, Any]:
        """Like `to_dict` for display: secret values are shown as "<redacted>"."""
        data = self.to_dict(include_secrets=False)
        if self.secrets:
            data["secrets"] = self._redact(self.secrets)
        return data

    # ---- scheduling

    def job_cpus(self) -> float:
        """CPUs one node of this job occupies; 0.5 when none are asked for, as in SkyPilot."""
        cpus = self.resources.candidates()[0].cpus_min()
        return DEFAULT_JOB_CPUS if cpus is None else cpus

    def job_accelerators(self) -> dict[str, int]:
        """Accelerators one node of this job occupies (first candidate's), e.g. {'A100': 8}."""
        return dict(self.resources.candidates()[0].accelerators or {})

    # ---- CLI overrides

    def with_overrides(
        self,
        *,
        envs: Mapping[str, Any] | Iterable[str] | None = None,
        secrets: Mapping[str, Any] | Iterable[str] | None = None,
        cpus: str | float | None = None,
        memory: str | float | None = None,
        gpus: str | Mapping[str, int] | None = None,
        num_nodes: int | str | None = None,
        infra: str | None = None,
        workdir: str | None = None,
        name: str | None = None,
    ) -> Task:
        """A new validated task with launch-time options applied (None leaves a field as is).

        `envs`/`secrets` take a mapping or `KEY=VALUE` strings and add to the task's own.
        Resource overrides replace the value everywhere, including any_of/ordered candidates.
        A bad value raises `TaskValidationError` whose field is the CLI option, e.g. `--cpus`.
        """
        steps: list[tuple[str, Any]] = [
            ("--env", envs), ("--secret", secrets), ("--cpus", cpus), ("--memory", memory),
            ("--gpus", gpus), ("--num-nodes", num_nodes), ("--infra", infra),
            ("--workdir", workdir), ("--name", name)]
        data = self.to_dict(include_secrets=True)
        if self._file_mounts_template is not None:
            data["file_mounts"] = _copy_json(self._file_mounts_template)  # re-filled from new envs
        task = self
        for option, value in steps:
            if value is None:
                continue
            try:
                data = _apply_override(data, option, value)
                task = Task._build(data)
            except (_Invalid, ValidationError) as exc:
                problems = [Problem(option, None, exc.message)] if isinstance(exc, _Invalid) else [
                    Problem(option, None, p.message) for p in _problems_from(exc, {})]
                raise TaskValidationError(problems=problems) from None
        return task


def _apply_override(data: dict[str, Any], option: str, value: Any) -> dict[str, Any]:
    data = {**data, "resources": dict(data.get("resources", {}))}
    if option in ("--env", "--secret"):
        key = "envs" if option == "--env" else "secrets"
        data[key] = {**data.get(key, {}), **_parse_key_values(value)}
    elif option == "--num-nodes":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        data["num_nodes"] = value
    elif option in ("--workdir", "--name"):
        data[option[2:]] = value
    else:
        key = {"--cpus": "cpus", "--memory": "memory", "--gpus": "accelerators",
               "--infra": "infra"}[option]
        resources = data["resources"]
        resources[key] = value
        for list_key in ("any_of", "ordered"):
            if list_key not in resources:
                continue
            kept: list[dict[str, Any]] = []
            for option_dict in resources.pop(list_key):
                trimmed = {k: v for k, v in option_dict.items() if k != key}
                if trimmed and trimmed not in kept:
                    kept.append(trimmed)
            if kept:
                resources[list_key] = kept
    return data


_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill_envs(value: Any, envs: Mapping[str, str]) -> Any:
    """``${VAR}`` in every string of ``value`` replaced by ``envs[VAR]``; unknown names (and
    ``$VAR`` without braces) are left as written, as SkyPilot leaves them."""
    if isinstance(value, str):
        return _ENV_REF_RE.sub(lambda m: envs.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill_envs(item, envs) for item in value]
    if isinstance(value, Mapping):
        return {k: _fill_envs(v, envs) for k, v in value.items()}
    return value


def _list_sources(sources: list[Any], field: str) -> list[str]:
    if not sources:
        raise _Invalid("a list of sources must not be empty", field)
    if len(sources) > MAX_LIST_SOURCES:
        raise _Invalid(f"a list of sources holds at most {MAX_LIST_SOURCES} paths (got {len(sources)})", field)
    for i, item in enumerate(sources):
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(f"each source must be a non-empty path (got {item!r})", field, i)
        _source_name(item, field, i)
    return sources


def _source_name(source: str, *where: str | int) -> str:
    """The name a listed source takes inside the destination directory: its last component."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", "..", "~"):
        raise _Invalid(f"{source!r} has no name to copy it under; name a file or directory "
                       "(a list copies each source into the destination by its name)", *where)
    return name


def _copy_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return value


def _parse_key_values(value: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        value = [value]
    pairs = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        if not sep:
            raise _Invalid(f"expected KEY=VALUE (got {item!r})")
        pairs[key] = val
    return pairs


# --------------------------------------------------------------------- YAML loading

def read_task_file(path: Path) -> str:
    """A task file's text, refused (``TaskValidationError``) when too large or not UTF-8."""
    with open(path, "rb") as f:
        data = f.read(MAX_TASK_BYTES + 1)
    if len(data) > MAX_TASK_BYTES:
        raise TaskValidationError(f"{path} is larger than {MAX_TASK_BYTES} bytes (STYX_MAX_TASK_BYTES)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskValidationError(f"{path} is not UTF-8 text (byte {err.start})") from None


def check_yaml_bounds(text: str) -> None:
    """Refuse, before anything is built, YAML that is too large, too deep, or whose aliases
    expand to too many values. Walks PyYAML's event stream, which is iterative: a 1,000-deep
    file or a billion-laughs file costs time proportional to its size, not its expansion."""
    if len(text) > MAX_TASK_BYTES:
        raise TaskValidationError(f"the task YAML is larger than {MAX_TASK_BYTES} bytes (STYX_MAX_TASK_BYTES)")
    depth = expanded = 0
    sizes: dict[str, int] = {}  # anchor -> values it expands to
    open_anchors: list[tuple[str | None, int]] = []
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                expanded += sizes.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                expanded += 1
                open_anchors.append((event.anchor, expanded))
                if depth > MAX_YAML_DEPTH:
                    raise TaskValidationError(f"the task YAML nests deeper than {MAX_YAML_DEPTH} levels",
                                              line=event.start_mark.line + 1)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                anchor, start = open_anchors.pop()
                if anchor:
                    sizes[anchor] = expanded - start + 1
            if expanded > MAX_YAML_NODES:
                raise TaskValidationError(
                    f"the task YAML expands to more than {MAX_YAML_NODES} values (aliases)",
                    line=event.start_mark.line + 1)
    except yaml.YAMLError:
        return  # _load_yaml reports syntax errors with their line


def _documents(loader: yaml.SafeLoader) -> list[yaml.Node]:
    """The YAML stream's documents as nodes, empty ones left out (raises ``yaml.YAMLError``)."""
    documents = []
    while loader.check_node():
        node = loader.get_node()
        if not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            documents.append(node)
    return documents


def _load_yaml(text: str) -> tuple[Any, dict[str, int]]:
    """Parse one YAML document; return the data and the 1-based line of every key path."""
    check_yaml_bounds(text)
    loader = yaml.SafeLoader(text)
    try:
        documents = _documents(loader)
        header: Any = None
        if len(documents) > 1 and _is_pipeline_header(documents[0]):
            # SkyPilot's pipeline: a header naming the pipeline, then its tasks.
            header = loader.construct_document(documents.pop(0))
            if len(documents) > 1:
                raise TaskValidationError(
                    f"this pipeline has {len(documents)} tasks: a pipeline is not supported on one cluster; "
                    "run the pipeline with `styx jobs launch` (each task on a cluster of its own, in order)",
                    line=documents[1].start_mark.line + 1)
        if len(documents) > 1:
            raise TaskValidationError(
                f"found {len(documents)} YAML documents separated by '---': several tasks are not supported "
                "on one cluster; put one task in the file, or run them as a pipeline with `styx jobs launch`",
                line=documents[1].start_mark.line + 1)
        if not documents:
            raise TaskValidationError("the task YAML is empty")
        data = loader.construct_document(documents[0])
        if isinstance(data, dict) and isinstance(header, dict) and data.get("name") is None \
                and header.get("name") is not None:
            data["name"] = header["name"]  # the job takes the pipeline's name
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskValidationError(f"invalid YAML: {problem}",
                                  line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    lines = {"": documents[0].start_mark.line + 1}
    _record_lines(documents[0], [], lines, set())
    return data, lines


def _is_pipeline_header(node: yaml.Node) -> bool:
    """A pipeline's first document: a mapping that holds only the pipeline's ``name``."""
    return isinstance(node, yaml.MappingNode) and bool(node.value) and all(
        isinstance(key, yaml.ScalarNode) and key.value == "name" for key, _ in node.value)


def _record_lines(node: yaml.Node, path: list[str | int], lines: dict[str, int],
                  seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its lines are recorded where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and not key_node.tag.endswith(":merge"):
                child = [*path, key_node.value]
                lines[_format_path(child)] = key_node.start_mark.line + 1
                _record_lines(value_node, child, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = [*path, i]
            lines[_format_path(child)] = item.start_mark.line + 1
            _record_lines(item, child, lines, seen)


# --------------------------------------------------------------------- pipelines




class Pipeline(NamedTuple):
    """A pipeline in SkyPilot's form: a header document naming it, then one document per task,
    run one after another (``styx jobs launch pipeline.yaml``). A file of one task is a
    pipeline of one.

    >>> p = load_pipeline("name: p\\n---\\nname: a\\nrun: echo a\\n---\\nrun: echo b\\n")
    >>> p.name, [t.name for t in p.tasks]
    ('p', ['a', None])
    """

    name: str | None
    tasks: list[Task]


def load_pipeline(source: str | os.PathLike[str]) -> Pipeline:
    """A pipeline (or one task) from a YAML file or YAML text; ``TaskValidationError`` names
    the task (``tasks[1].resources.cpus``) and the line of the first problem."""
    if isinstance(source, os.PathLike) or ("\n" not in source and len(source) < 4096 and os.path.isfile(source)):
        text = read_task_file(Path(source))
    else:
        text = source
    check_yaml_bounds(text)
    loader = yaml.SafeLoader(text)
    try:
        documents = _documents(loader)
        if not documents:
            raise TaskValidationError("the task YAML is empty")
        header: Any = None
        if len(documents) > 1 and _is_pipeline_header(documents[0]):
            header = loader.construct_document(documents.pop(0))
        if len(documents) > MAX_PIPELINE_TASKS:
            raise TaskValidationError(f"a pipeline has at most {MAX_PIPELINE_TASKS} tasks (this one has "
                                      f"{len(documents)})", line=documents[MAX_PIPELINE_TASKS].start_mark.line + 1)
        parsed = [(loader.construct_document(node), node) for node in documents]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskValidationError(f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    name = header.get("name") if isinstance(header, dict) else None
    if name is not None and not isinstance(name, str):
        raise TaskValidationError(f"the pipeline's name must be a string (got {name!r})", field="name", line=1)
    tasks = []
    for index, (data, node) in enumerate(parsed):
        lines = {"": node.start_mark.line + 1}
        _record_lines(node, [], lines, set())
        prefix = f"tasks[{index}]" if len(parsed) > 1 else ""
        if not isinstance(data, Mapping):
            raise TaskValidationError(f"a task must be a YAML mapping (got {type(data).__name__})",
                                      field=prefix or None, line=lines[""])
        if len(parsed) == 1 and data.get("name") is None and name is not None:
            data["name"] = name  # a pipeline of one: the job takes the pipeline's name
        try:
            tasks.append(Task._validate(data, lines))
        except TaskValidationError as err:
            if not prefix:
                raise
            raise TaskValidationError(problems=[
                Problem(f"{prefix}.{p.field}" if p.field else prefix, p.line, p.message) for p in err.problems
            ]) from None
    return Pipeline(name, tasks)
