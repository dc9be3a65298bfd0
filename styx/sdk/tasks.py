"""A task as the SDK's methods take it: a ``Task``, a dict, a YAML path or a bare command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from styx.sdk.transport import Invalid

if TYPE_CHECKING:
    from styx.task import Task


def as_task(task: "Task | dict[str, Any] | str | Path") -> "Task":
    """A Task, a dict, a YAML path or a bare command, as a Task (``Invalid`` naming the field
    when it is not a valid task)."""
    from styx.task import Task, TaskValidationError  # here: listing clusters needs no task model

    try:
        if isinstance(task, Task):
            return task
        if isinstance(task, dict):
            return Task.from_dict(task)
        if isinstance(task, Path) or (isinstance(task, str) and (task.endswith((".yaml", ".yml"))
                                                                 or Path(task).is_file())):
            return Task.from_yaml(Path(task))
        return Task.from_command(task)
    except (TaskValidationError, OSError) as err:
        raise Invalid(None, str(err)) from err
