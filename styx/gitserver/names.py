"""Names that reach the disk or a ``git`` command line, checked once at the edge.

A repository path from a URL or an SSH command becomes a :class:`RepoName` here, or is
refused; nothing below this module handles a raw path string. Ref names are checked with
git's ``check-ref-format`` rules plus Styx's own: only branches and tags, and no component
may start with ``-`` (a branch named ``--upload-pack=...`` is valid to git, and dangerous
wherever a ref ends up as an argument).

>>> RepoName.parse("/alice/ml.git")
RepoName(owner='alice', name='ml')
>>> RepoName.parse("alice/../bob/x")
Traceback (most recent call last):
...
styx.gitserver.names.InvalidName: invalid repository path 'alice/../bob/x': use <owner>/<name>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "InvalidName",
    "InvalidRef",
    "RepoName",
    "ZERO_SHA",
    "branch_ref",
    "check_branch_name",
    "check_ref",
    "check_user_name",
    "is_sha",
]

ZERO_SHA = "0" * 40

_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_REPO_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: Names a repository may not take (they mean something to git, to us, or to a shell).
_RESERVED = {".", "..", "git", "info", "objects", "refs", "hooks", "HEAD"}


class InvalidName(ValueError):
    """A user, repository or path that Styx refuses; the message says what is allowed."""


class InvalidRef(ValueError):
    """A ref or branch name that git or Styx refuses."""


def check_user_name(name: str) -> str:
    """A user (and repository owner) name: letters, digits, ``_ . -``, not starting with ``.``/``-``."""
    if not isinstance(name, str) or not _USER_RE.fullmatch(name) or name.endswith((".git", ".lock")):
        raise InvalidName(
            f"invalid user name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")
    return name


def _check_repo_name(name: str) -> str:
    if (not isinstance(name, str) or not _REPO_RE.fullmatch(name) or name in _RESERVED
            or name.endswith((".git", ".lock")) or ".." in name):
        raise InvalidName(
            f"invalid repository name {name!r}: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter, digit or '_', not ending in '.git' or '.lock'")
    return name


@dataclass(frozen=True, order=True)
class RepoName:
    """``owner/name`` of a repository, validated; ``path_under(root)`` is where it lives."""

    owner: str
    name: str

    def __post_init__(self) -> None:
        check_user_name(self.owner)
        _check_repo_name(self.name)

    @classmethod
    def parse(cls, raw: str) -> "RepoName":
        """``alice/ml``, ``/alice/ml.git``, ``alice/ml.git/``: one optional leading ``/``, one
        optional ``.git`` suffix and trailing ``/``; anything else is an :class:`InvalidName`."""
        bad = InvalidName(f"invalid repository path {raw!r}: use <owner>/<name>")
        if not isinstance(raw, str) or not raw or len(raw) > 200 or not raw.isascii():
            raise bad
        if any(ord(c) < 0x21 or c in "\\\x7f" for c in raw):  # NUL, control, space, backslash
            raise bad
        path = raw[1:] if raw.startswith("/") else raw
        if path.endswith("/"):
            path = path[:-1]
        parts = path.split("/")
        if len(parts) != 2:
            raise bad
        owner, name = parts
        if name.endswith(".git"):
            name = name[: -len(".git")]
        try:
            return cls(owner, name)
        except InvalidName as err:
            raise InvalidName(f"invalid repository path {raw!r}: {err}") from None

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"

    def path_under(self, root: Path) -> Path:
        """``<root>/<owner>/<name>.git``, resolved, and checked to be inside ``root``.

        The check compares with a trailing separator, so ``/srv/git-x`` is not "inside"
        ``/srv/git`` (soft-serve's prefix check let that through).
        """
        root = root.resolve()
        path = (root / self.owner / f"{self.name}.git").resolve()
        if not str(path).startswith(str(root) + "/") or path.parent.parent != root:
            raise InvalidName(f"repository {self} resolves outside the repository root")
        return path


def is_sha(value: str) -> bool:
    return isinstance(value, str) and bool(_SHA_RE.fullmatch(value))


def check_ref(ref: str) -> str:
    """A full ref name Styx accepts: ``refs/heads/*`` or ``refs/tags/*`` by git's
    check-ref-format rules, no component starting with ``-``."""
    from dulwich.refs import check_ref_format

    if not isinstance(ref, str) or not ref.isascii() or len(ref) > 255:
        raise InvalidRef(f"invalid ref {ref!r}")
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        raise InvalidRef(f"ref {ref!r} refused: only branches (refs/heads/) and tags (refs/tags/) can be pushed")
    if not check_ref_format(ref.encode()) or any(c in ref for c in " ~^:?*[\\\x7f") or "@{" in ref:
        raise InvalidRef(f"invalid ref name {ref!r} (see `git help check-ref-format`)")
    if any(part.startswith("-") for part in ref.split("/")):
        raise InvalidRef(f"ref {ref!r} refused: no part of a ref name may start with '-'")
    if any(ord(c) < 0x20 for c in ref):
        raise InvalidRef(f"invalid ref name {ref!r}")
    return ref


def check_branch_name(name: str) -> str:
    """A short branch name (``main``, ``feature/x``); raises :class:`InvalidRef`."""
    if not isinstance(name, str) or not name or name.startswith(("refs/", "-")) or name == "HEAD":
        raise InvalidRef(f"invalid branch name {name!r}")
    check_ref(f"refs/heads/{name}")
    return name


def branch_ref(name: str) -> str:
    return f"refs/heads/{check_branch_name(name)}"
