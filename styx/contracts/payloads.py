"""How large a payload may be before it reaches Temporal, and the check that says which field
is too large.

Temporal refuses a payload over 2 MiB, and a workflow whose state or input grew past it fails
its workflow task again and again: nothing moves, and not even ``down`` gets through (see the
Temporal notes). So every caller checks what it sends first (``check_payload``), and a refusal
names the field, its size and the limit (``PayloadTooLarge``): the API answers 413, the CLI
prints the one line.

- ``MAX_PAYLOAD_BYTES``: any one payload we hand Temporal (a job's spec, loaded by its job
  workflow; a cluster's launch spec). Well under Temporal's 2 MiB: JSON, then the payload's own
  framing.
- ``MAX_SUBMISSION_BYTES``: a submission as the cluster workflow sees it — ids and a
  resource shape, never the task's body, which waits in the database (``JobSpec``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

#: Temporal's own limit on one payload (the server's ``limit.blobSize.error``, 2 MiB).
TEMPORAL_PAYLOAD_LIMIT = 2 * 1024 * 1024
#: The most Styx hands Temporal in one payload.
MAX_PAYLOAD_BYTES = 1_500_000
#: The most one submission carries to the cluster workflow (its update's input).
MAX_SUBMISSION_BYTES = 64 * 1024


class PayloadTooLarge(ValueError):
    """``field`` makes a payload larger than ``limit`` bytes; the message says so in one line."""

    def __init__(self, field: str, size: int, limit: int, hint: str = "") -> None:
        self.field, self.size, self.limit = field, size, limit
        super().__init__(f"{field}: {size:,} bytes is more than the {limit:,} bytes allowed"
                         + (f"; {hint}" if hint else ""))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def payload_size(value: Any) -> int:
    """Bytes of ``value`` as Temporal's JSON converter writes it (a close upper bound)."""
    return len(json.dumps(_plain(value), default=str, separators=(",", ":")).encode())


def largest_field(value: Any, prefix: str = "") -> str:
    """The dotted path of the leaf that weighs most in ``value`` (``task.run``, ``env.DATA``)."""
    value = _plain(value)
    path = prefix
    while isinstance(value, dict) and value:
        key = max(value, key=lambda k: payload_size(value[k]))
        path = f"{path}.{key}" if path else str(key)
        value = value[key]
    return path or "payload"


def check_payload(value: Any, what: str, limit: int = MAX_PAYLOAD_BYTES, hint: str = "") -> int:
    """The size of ``value`` (``what`` prefixes the field named), or ``PayloadTooLarge`` naming
    its largest field when it is over ``limit``."""
    size = payload_size(value)
    if size > limit:
        raise PayloadTooLarge(largest_field(value, what), size, limit, hint)
    return size
