"""Uploads: files a client sent, named by content, that a task's ``workdir`` and ``file_mounts``
refer to instead of paths.

A client never names a path of the server. The SDK packs each local ``workdir`` and
``file_mounts`` source into a deterministic ``.tar.gz``, sends it to ``PUT
/api/v1/uploads/<sha256>`` (unless ``HEAD`` says the server has it for this user already) and
rewrites the task to name the upload::

    workdir: upload:3f5a…c2                 # the whole archive: a directory
    file_mounts:
      ~/data: upload:9b1e…07                # a directory
      ~/.netrc: upload:c4d2…aa/.netrc       # one member of an archive: a file

``UploadRef.parse`` reads that form; the worker fetches the archive from the database by its
sha256 and copies the tree (or the named member) to the node.

>>> ref = UploadRef.parse("upload:" + "a" * 64 + "/.netrc")
>>> ref.sha256 == "a" * 64, ref.member
(True, '.netrc')
>>> UploadRef.parse("/etc/passwd") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from styx.contracts.rest import RestModel

#: How a task names an upload: ``upload:<sha256>[/<member>]``.
UPLOAD_SCHEME = "upload:"
#: Rows of ``upload_chunks`` hold at most this much: neither the API nor a worker ever holds
#: a whole archive in memory.
UPLOAD_CHUNK_BYTES = 4 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_MEMBER = 1024


class InvalidUploadRef(ValueError):
    """Text that starts with ``upload:`` but is not a valid reference."""


def is_sha256(text: str) -> bool:
    """A lowercase hex sha256, as uploads are named."""
    return bool(_SHA256.match(text))


@dataclass(frozen=True)
class UploadRef:
    """An upload named in a task: the archive's ``sha256``, and optionally one ``member`` of
    it (a relative path inside the archive; empty for the whole tree)."""

    sha256: str
    member: str = ""

    def __post_init__(self) -> None:
        if not is_sha256(self.sha256):
            raise InvalidUploadRef(f"{UPLOAD_SCHEME} must be followed by a lowercase hex sha256 "
                                   f"(got {self.sha256[:80]!r})")
        if self.member:
            parts = self.member.split("/")
            if (len(self.member) > _MAX_MEMBER or "\0" in self.member or "\\" in self.member
                    or any(p in ("", ".", "..") for p in parts)):
                raise InvalidUploadRef(f"the member after the sha256 must be a relative path inside "
                                       f"the upload, without '.' or '..' (got {self.member[:80]!r})")

    @classmethod
    def parse(cls, text: str) -> UploadRef | None:
        """The reference ``text`` holds, None when it names no upload (a path, a bucket URI);
        ``InvalidUploadRef`` when it starts with ``upload:`` but is malformed."""
        if not isinstance(text, str) or not text.startswith(UPLOAD_SCHEME):
            return None
        sha, _, member = text[len(UPLOAD_SCHEME):].partition("/")
        return cls(sha, member)

    def __str__(self) -> str:
        return f"{UPLOAD_SCHEME}{self.sha256}" + (f"/{self.member}" if self.member else "")


class UploadInfo(RestModel):
    """An upload the caller may use (REST answer of ``PUT`` and ``GET /api/v1/uploads``)."""

    sha256: str
    size: int
    created_at: datetime
    last_used_at: datetime | None = None
    #: On ``PUT``: False when the server had these bytes already (nothing new was stored).
    stored: bool = True


def task_uploads(task: object) -> set[str]:
    """The sha256s of the uploads a task's JSON form (``Task.to_dict``) names, in its
    ``workdir`` and ``file_mounts``: what work that runs it pins (``db.uploads``).

    >>> sorted(task_uploads({"workdir": "upload:" + "a" * 64, "file_mounts": {"~/x": "upload:" + "b" * 64 + "/x"}}))
    ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb']
    """
    if not isinstance(task, dict):
        return set()
    sources = [task.get("workdir")]
    mounts = task.get("file_mounts")
    if isinstance(mounts, dict):
        sources += [m.get("source") if isinstance(m, dict) else m for m in mounts.values()]
    found = set()
    for source in sources:
        try:
            ref = UploadRef.parse(source) if isinstance(source, str) else None
        except InvalidUploadRef:
            continue
        if ref is not None:
            found.add(ref.sha256)
    return found
