"""Styx: durable clusters, jobs and git-push runs on Temporal.

The public Python API::

    import styx

    task = styx.Task.from_yaml("examples/hello.yaml")
    with styx.Client() as client:          # finds the API and token of `styx up`
        job = client.launch(task, cluster="dev")
        print(client.wait("dev", job.job_id).status)

Every failure of a client call is a ``styx.StyxError`` with a ``hint``: ``NotFound``,
``Conflict``, ``Invalid``, ``Unauthorized``, ``Forbidden``, ``Unavailable``,
``ApiUnreachable`` (no answer: is `styx up` running?) and ``WaitTimeout``.
"""

from typing import Any

__version__ = "0.1.0"
#: The SDK's errors (``styx.sdk.transport``), importable from ``styx``.
_ERRORS = ("StyxError", "NotFound", "Conflict", "Invalid", "Unauthorized", "Forbidden", "Unavailable",
          "ApiUnreachable", "WaitTimeout")
__all__ = ["AsyncClient", "Client", "Task", "__version__", *_ERRORS]


def __getattr__(name: str) -> Any:  # imported lazily: workers and workflows need none of these
    if name in ("Client", "AsyncClient"):
        from styx.sdk import client

        return getattr(client, name)
    if name in _ERRORS:
        from styx.sdk import transport

        return getattr(transport, name)
    if name == "Task":
        from styx.task import Task

        return Task
    raise AttributeError(f"module 'styx' has no attribute {name!r}")
