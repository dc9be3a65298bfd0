"""``.styx.yaml``: the jobs a push runs, and when.

At the root of a commit, either several named jobs::

    jobs:
      test:
        on: {push: {branches: [main, "release/*"], paths: ["src/**", "tests/**"]}}
        cluster: dev                  # an existing cluster
        run: pytest -q
      build:
        on: {push: {tags: ["v*"]}}
        managed: true                 # a fresh local cluster, taken down after the job
        resources: {cpus: 1}
        run: make dist

or one job at the top level (the same keys without ``jobs:``). Each job is a task as in
``styx.task`` (SkyPilot's YAML) plus ``on``, and exactly one of ``cluster`` and
``managed: true``. Without ``on`` a job runs on a push to any branch (not on tags).
Patterns are shell globs (``*`` also matches ``/``). The job's workdir is the pushed
commit's tree (a relative ``workdir:`` picks a directory inside it), and ``file_mounts``
sources are files or directories of the commit (relative paths; nothing outside it).

A bad file raises :class:`ConfigError` whose ``field`` is the dotted path of the problem
(``jobs.test.resources.cpus``) and whose message gives the line.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from styx.task import Task, TaskValidationError, _load_yaml

CONFIG_FILE = ".styx.yaml"
_JOB_KEYS = ("on", "cluster", "managed")
_FILTER_KEYS = ("branches", "tags", "paths")


class ConfigError(ValueError):
    def __init__(self, message: str, field: str | None = None, line: int | None = None) -> None:
        where = field or ""
        if line is not None:
            where = f"{where} (line {line})" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.field = field
        self.line = line


@dataclass
class PushJobSpec:
    name: str
    task: Task
    cluster: str | None
    managed: bool
    branches: list[str] | None
    tags: list[str] | None
    paths: list[str] | None

    def wants_ref(self, ref: str) -> bool:
        if ref.startswith("refs/heads/"):
            if self.branches is None:
                return self.tags is None
            return _any_match(self.branches, ref[len("refs/heads/"):])
        if ref.startswith("refs/tags/"):
            return self.tags is not None and _any_match(self.tags, ref[len("refs/tags/"):])
        return False


def _any_match(patterns: list[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def load_config(text: str | bytes) -> list[PushJobSpec]:
    """Parse and validate the whole file; raises :class:`ConfigError` on the first problem."""
    from styx.services.launch import InvalidRequest, check_cluster_name, load_task, provider_of

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{CONFIG_FILE} is not UTF-8 text") from None
    try:
        data, lines = _load_yaml(text)
    except TaskValidationError as err:
        raise ConfigError(err.problems[0].message, err.field, err.line) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{CONFIG_FILE} must be a mapping: `jobs: {{name: job}}`, or one job", line=lines.get(""))

    if "jobs" in data:
        extra = sorted(set(data) - {"jobs"})
        if extra:
            raise ConfigError("with `jobs:`, put every other key inside a job", extra[0], lines.get(str(extra[0])))
        jobs = data["jobs"]
        if not isinstance(jobs, Mapping) or not jobs:
            raise ConfigError("must be a non-empty mapping of job name to job", "jobs", lines.get("jobs"))
        items = [(str(k), v, f"jobs.{k}") for k, v in jobs.items()]
    else:
        items = [(str(data.get("name") or "default"), data, "")]

    specs = []
    for name, body, prefix in items:
        def where(sub: str | None) -> str:
            return ".".join(p for p in (prefix, sub) if p)

        if not isinstance(body, Mapping):
            raise ConfigError("a job must be a mapping (a task plus `on` and `cluster`/`managed`)",
                              prefix or None, lines.get(prefix))
        body = dict(body)
        on = body.pop("on", None) if "on" in body else body.pop(True, None)  # YAML 1.1 reads `on` as true
        cluster = body.pop("cluster", None)
        managed = body.pop("managed", None)
        branches, tags, paths = _parse_on(on, where("on"), lines)
        if managed not in (None, True, False):
            raise ConfigError("must be true or false", where("managed"), lines.get(where("managed")))
        if (cluster is None) == (not managed):
            raise ConfigError("give exactly one of `cluster: <name>` (an existing cluster) or `managed: true`",
                              where("cluster"), lines.get(where("cluster")) or lines.get(prefix))
        if cluster is not None:
            try:
                check_cluster_name(cluster)
            except InvalidRequest as err:
                raise ConfigError(str(err).split(": ", 1)[1], where("cluster"), lines.get(where("cluster"))) from None
        # The job's files are the commit's: its workdir and file_mounts sources are relative
        # paths inside it, resolved against the exported tree by the worker (push_submit).
        workdir = body.pop("workdir", None)
        if workdir is not None and not _inside_commit(workdir):
            raise ConfigError("must be a relative directory inside the repository", where("workdir"),
                              lines.get(where("workdir")))
        mounts = body.pop("file_mounts", None)
        _check_mounts(mounts, where, lines)
        try:
            task = Task.from_dict(body)
            load_task(task.to_dict(include_secrets=True))
            provider_of(task)
        except TaskValidationError as err:
            field = where(err.field)
            raise ConfigError(err.problems[0].message, field, lines.get(field)) from None
        except InvalidRequest as err:
            field = where(err.field.removeprefix("task.").removeprefix("task"))
            message = str(err).split(": ", 1)[1]
            if "no value given" in message:  # a push has no --env to give it with
                message = message.split(";")[0] + "; a pushed job gets its values from this file only"
            raise ConfigError(message, field, lines.get(field)) from None
        if workdir or mounts:
            task = Task.from_dict({**task.to_dict(include_secrets=True), "workdir": workdir or None,
                                   "file_mounts": mounts or {}})
        specs.append(PushJobSpec(name, task, cluster, bool(managed), branches, tags, paths))
    return specs


def _inside_commit(path: Any) -> bool:
    """A relative path that stays inside the commit (symlinks are checked once exported)."""
    return (isinstance(path, str) and bool(path.strip()) and not posixpath.isabs(path)
            and not path.startswith("~") and ".." not in posixpath.normpath(path).split("/"))


def _check_mounts(mounts: Any, where: Callable[[str | None], str], lines: Mapping[str, int]) -> None:
    """``file_mounts`` of a pushed job: sources are files or directories of the commit."""
    if mounts is None:
        return
    try:
        parsed = Task.from_dict({"file_mounts": mounts}).file_mounts
    except TaskValidationError as err:
        field = where(err.field)
        raise ConfigError(err.problems[0].message, field, lines.get(field)) from None
    for dst, mount in parsed.items():
        field = where(f"file_mounts.{dst}")
        if not mount.is_plain_copy or "://" in (mount.source or ""):
            raise ConfigError("storage (bucket) mounts are not supported yet; mount a path of the repository",
                              field, lines.get(field))
        if not _inside_commit(mount.source):
            raise ConfigError(f"{mount.source!r} is not a relative path inside the repository: a pushed job "
                              "may only mount files of its commit", field, lines.get(field))


def _parse_on(on: Any, field: str, lines: Mapping[str, int]) -> tuple[list[str] | None, ...]:
    if on is None:
        return None, None, None
    if on == "push" or on == ["push"]:
        return None, None, None
    if not isinstance(on, Mapping) or set(on) - {"push"}:
        raise ConfigError("only `on: {push: {branches, tags, paths}}` is supported", field, lines.get(field))
    push = on.get("push")
    if push is None:
        return None, None, None
    if not isinstance(push, Mapping):
        raise ConfigError("must be a mapping with branches, tags and/or paths", f"{field}.push",
                          lines.get(f"{field}.push"))
    out: list[list[str] | None] = []
    for key in set(push) - set(_FILTER_KEYS):
        raise ConfigError(f"unknown filter {key!r}; use branches, tags or paths", f"{field}.push.{key}",
                          lines.get(f"{field}.push.{key}"))
    for key in _FILTER_KEYS:
        value = push.get(key)
        sub = f"{field}.push.{key}"
        if value is None:
            out.append(None)
        elif isinstance(value, str):
            out.append([value])
        elif isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            out.append(list(value))
        else:
            raise ConfigError("must be a glob or a list of globs", sub, lines.get(sub))
    return out[0], out[1], out[2]


def select_jobs(specs: list[PushJobSpec], ref: str, changed_paths: Callable[[], list[str]]) -> list[PushJobSpec]:
    """The jobs that run for a push to ``ref``; ``changed_paths`` is called only if a job
    filters on paths."""
    chosen = []
    changed: list[str] | None = None
    for spec in specs:
        if not spec.wants_ref(ref):
            continue
        if spec.paths is not None:
            if changed is None:
                changed = changed_paths()
            if not any(_any_match(spec.paths, p) for p in changed):
                continue
        chosen.append(spec)
    return chosen


def skips_ci(message: str) -> bool:
    """``[skip ci]`` (or ``[ci skip]``, ``[no ci]``, ``[skip styx]``) in the commit message."""
    lowered = message.lower()
    return any(tag in lowered for tag in ("[skip ci]", "[ci skip]", "[no ci]", "[skip styx]"))
