"""Local files of a task, sent as uploads: what ``Client.launch`` / ``exec`` do before they
send the task, so that the server never reads a path a client named.

For each local ``workdir`` and ``file_mounts`` source (a file or a directory; relative paths
are relative to the current directory, ``~`` is expanded, as in SkyPilot) the SDK

1. packs it into a ``.tar.gz`` (``pack``): sorted members, zero mtimes, uids and names, so the
   same content always makes the same bytes; files ignored by ``.skyignore`` at the source's
   root or, without one, by the ``.gitignore`` files inside it (SkyPilot's rule) are left out,
   as are symlinks that point out of the source. At most ``STYX_MAX_UPLOAD_BYTES`` packed
   and ``STYX_MAX_UNPACKED_BYTES`` unpacked, else ``UploadTooLarge`` names the field;
2. asks ``HEAD /api/v1/uploads/<sha256>`` and, unless the server has it for this user
   already, streams it with ``PUT`` (``progress`` is told how far it got);
3. names it in the task instead of the path: ``workdir: upload:<sha256>``, ``file_mounts:
   {~/data: upload:<sha256>, ~/.netrc: upload:<sha256>/.netrc}``.

Example::

    from styx.sdk.uploads import send_files

    with styx.Client() as client:
        body = send_files(client, Task.from_yaml("task.yaml"), progress=print)
        print([(u.sha256[:12], u.size) for u in client.uploads()])

``UploadsMixin`` / ``AsyncUploadsMixin`` (in ``styx.Client``): ``uploads()`` and
``delete_upload(sha256)``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, AsyncIterator, Awaitable

import httpx

from styx.config import Settings
from styx.contracts.uploads import UploadInfo, UploadRef
from styx.sdk.transport import AsyncTransport, Request, StyxError, SyncTransport, raise_for_status

if TYPE_CHECKING:  # packing loads these when it runs: listing clusters needs none of them
    import tarfile

    from pathspec import GitIgnoreSpec

    from styx.task import Task

__all__ = ["AsyncUploadsMixin", "Packed", "UploadError", "UploadEvent", "UploadTooLarge", "UploadsMixin", "pack",
           "send_files", "send_files_async"]

_SEND_BLOCK = 1 << 20


class UploadError(StyxError):
    """A local source cannot be sent; the message names the task field."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, message)


class UploadTooLarge(UploadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 413)


@dataclass(frozen=True)
class UploadEvent:
    """Progress of one source: ``state`` is "packing", "sending" (``sent`` of ``size``
    bytes so far), "sent" or "already there" (the server had it: nothing was sent)."""

    field: str
    source: str
    state: str
    size: int = 0
    sent: int = 0
    files: int = 0
    #: Symlinks left out because they point out of the source.
    skipped_links: tuple[str, ...] = ()


Progress = Callable[[UploadEvent], None]


@dataclass
class Packed:
    """An archive made by ``pack``, in a temporary file the caller removes."""

    path: Path
    sha256: str
    size: int
    files: int
    #: For a single file: its name inside the archive; empty for a directory.
    member: str = ""
    skipped_links: list[str] = field(default_factory=list)

    @property
    def ref(self) -> UploadRef:
        return UploadRef(self.sha256, self.member)


# ----------------------------------------------------------------------------- ignore rules


class _Ignores:
    """SkyPilot's rule: ``.skyignore`` at the source's root if there is one, else every
    ``.gitignore`` inside the source (a deeper one wins) and ``.git/info/exclude``."""

    def __init__(self, root: Path) -> None:
        self.specs: dict[str, GitIgnoreSpec] = {}
        self.sky = self._read(root / ".skyignore")
        if self.sky is None:
            exclude = self._read(root / ".git" / "info" / "exclude")
            if exclude is not None:
                self.specs["\0exclude"] = exclude

    @staticmethod
    def _read(path: Path) -> GitIgnoreSpec | None:
        from pathspec import GitIgnoreSpec

        try:
            return GitIgnoreSpec.from_lines(path.read_text(errors="replace").splitlines()) if path.is_file() else None
        except OSError:
            return None

    def enter(self, rel_dir: str, path: Path) -> None:
        if self.sky is None:
            spec = self._read(path / ".gitignore")
            if spec is not None:
                self.specs[rel_dir] = spec

    def ignored(self, rel: str, is_dir: bool) -> bool:
        candidate = rel + "/" if is_dir else rel
        if self.sky is not None:
            return self.sky.match_file(candidate)
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):  # the deepest .gitignore first
            spec = self.specs.get("/".join(parts[:depth]))
            if spec is not None:
                result = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else ""))
                if result.include is not None:
                    return bool(result.include)
        exclude = self.specs.get("\0exclude")
        return bool(exclude is not None and exclude.match_file(candidate))


# ----------------------------------------------------------------------------- packing


class _Over(Exception):
    pass


class _Sink:
    """The archive's file: hashes and counts what is written, stops past ``limit`` bytes."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.out, self.limit = out, limit
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise _Over()
        self.digest.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _entries(root: Path, ignores: _Ignores, skipped: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every file, directory and inside-pointing symlink under ``root``, sorted, not ignored."""
    stack: list[tuple[str, Path]] = [("", root)]
    while stack:
        rel_dir, path = stack.pop()
        ignores.enter(rel_dir, path)
        try:
            names = sorted(os.listdir(path))
        except OSError as err:
            raise UploadError(f"cannot read {path}: {err.strerror}") from None
        subdirs = []
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            child = path / name
            st = child.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(child)
                inside = os.path.normpath(os.path.join(os.path.dirname(rel), target))
                if os.path.isabs(target) or inside == ".." or inside.startswith("../"):
                    skipped.append(rel)
                elif not ignores.ignored(rel, False):
                    yield rel, child, st
            elif stat.S_ISDIR(st.st_mode):
                if not ignores.ignored(rel, True):
                    yield rel, child, st
                    subdirs.append((rel, child))
            elif stat.S_ISREG(st.st_mode) and not ignores.ignored(rel, False):
                yield rel, child, st
        stack.extend(reversed(subdirs))  # depth first, in name order


def pack(source: Path, field: str, *, max_bytes: int, max_unpacked: int) -> Packed:
    """``source`` (a directory, or one file) as a deterministic ``.tar.gz`` in a temporary file."""
    import gzip
    import tarfile
    import tempfile

    shown = str(source)
    try:
        st = source.stat()
    except OSError:
        raise UploadError(f"{field}: {shown} does not exist") from None
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UploadError(f"{field}: {shown} is not a file or directory")
    fd, name = tempfile.mkstemp(prefix="styx-upload-", suffix=".tar.gz")
    path = Path(name)
    skipped: list[str] = []
    files = raw = 0
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _Sink(out, max_bytes)
            try:
                with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
                    if stat.S_ISREG(st.st_mode):
                        entries: Iterator[tuple[str, Path, os.stat_result]] = iter([(source.name, source, st)])
                    else:
                        entries = _entries(source, _Ignores(source), skipped)
                    for rel, child, cst in entries:
                        if stat.S_ISLNK(cst.st_mode):
                            info = _info(rel, cst, tarfile.SYMTYPE)
                            info.linkname = os.readlink(child)
                            tar.addfile(info)
                        elif stat.S_ISDIR(cst.st_mode):
                            tar.addfile(_info(rel, cst, tarfile.DIRTYPE))
                        else:
                            files += 1
                            raw += cst.st_size
                            if raw > max_unpacked:
                                raise UploadTooLarge(
                                    f"{field}: {shown} holds more than {_human(max_unpacked)} "
                                    f"(STYX_MAX_UNPACKED_BYTES={max_unpacked}); leave large files out with "
                                    ".skyignore or .gitignore")
                            info = _info(rel, cst, tarfile.REGTYPE)
                            info.size = cst.st_size
                            with open(child, "rb") as f:
                                tar.addfile(info, f)
            except _Over:
                raise UploadTooLarge(
                    f"{field}: {shown} packs to more than {_human(max_bytes)} (STYX_MAX_UPLOAD_BYTES="
                    f"{max_bytes}) with {_human(raw)} of files read so far: leave large files out with "
                    ".skyignore or .gitignore") from None
            except OSError as err:
                raise UploadError(f"{field}: cannot pack {shown}: {err}") from None
        member = source.name if stat.S_ISREG(st.st_mode) else ""
        return Packed(path, sink.digest.hexdigest(), sink.size, files, member, skipped)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _human(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


# ----------------------------------------------------------------------------- the task


def _local_sources(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, local path) of every source to send, in the task's order."""
    sources = []
    workdir = data.get("workdir")
    if isinstance(workdir, str) and UploadRef.parse(workdir) is None:
        sources.append(("workdir", workdir))
    for dst, mount in (data.get("file_mounts") or {}).items():
        source = mount.get("source") if isinstance(mount, dict) else mount
        if isinstance(source, str) and "://" not in source and UploadRef.parse(source) is None:
            sources.append((f"file_mounts.{dst}", source))
    return sources


def _replace(data: dict[str, Any], field_name: str, ref: str) -> None:
    if field_name == "workdir":
        data["workdir"] = ref
        return
    dst = field_name[len("file_mounts."):]
    mount = data["file_mounts"][dst]
    data["file_mounts"][dst] = {**mount, "source": ref} if isinstance(mount, dict) else ref


class _Plan:
    """The task's JSON and the sources it names, each packed once (by resolved path)."""

    def __init__(self, task: Task, settings: Settings) -> None:
        self.data = task.to_dict(include_secrets=True)
        self.settings = settings
        self.sources = _local_sources(self.data)
        self.packed: dict[Path, Packed] = {}

    def pack(self, field_name: str, source: str, progress: Progress | None) -> Packed:
        path = Path(source).expanduser().resolve()
        if field_name == "workdir" and not path.is_dir():
            raise UploadError(f"workdir: {source} is not a directory")
        if path not in self.packed:
            if progress:
                progress(UploadEvent(field_name, source, "packing"))
            self.packed[path] = pack(path, field_name, max_bytes=self.settings.max_upload_bytes,
                                     max_unpacked=self.settings.max_unpacked_bytes)
        return self.packed[path]

    def cleanup(self) -> None:
        for packed in self.packed.values():
            packed.path.unlink(missing_ok=True)


def _url(sha256: str) -> str:
    return f"/api/v1/uploads/{sha256}"


def _refused(field_name: str, resp: httpx.Response) -> None:
    try:
        raise_for_status(resp)
    except StyxError as err:
        raise UploadError(f"{field_name}: the upload was refused: {err.message}", err.status_code) from None


def _chunks(packed: Packed, on_sent: Callable[[int], None]) -> Iterator[bytes]:
    sent = 0
    with open(packed.path, "rb") as f:
        while data := f.read(_SEND_BLOCK):
            yield data
            sent += len(data)
            on_sent(sent)


def send_files(client: SyncTransport, task: Task, progress: Progress | None = None) -> dict[str, Any]:
    """``task``'s JSON with every local workdir / file_mounts source sent as an upload and
    named by it (see the module docstring)."""
    plan = _Plan(task, Settings.from_env(temporal=False))
    http: httpx.Client = client._http
    sent: set[str] = set()
    try:
        for name, source in plan.sources:
            packed = plan.pack(name, source, progress)
            if packed.sha256 not in sent:
                _send_one(http, name, source, packed, progress)
                sent.add(packed.sha256)
            _replace(plan.data, name, str(packed.ref))
    finally:
        plan.cleanup()
    return plan.data


def _send_one(http: httpx.Client, name: str, source: str, packed: Packed, progress: Progress | None) -> None:
    def event(state: str, done: int = 0) -> None:
        if progress:
            progress(UploadEvent(name, source, state, packed.size, done, packed.files, tuple(packed.skipped_links)))

    head = http.head(_url(packed.sha256))
    if head.status_code == 200:
        event("already there", packed.size)
        return
    if head.status_code != 404:
        _refused(name, head)
    event("sending")
    resp = http.put(_url(packed.sha256), content=_chunks(packed, lambda n: event("sending", n)),
                    headers={"content-type": "application/gzip", "content-length": str(packed.size)})
    _refused(name, resp)
    event("sent", packed.size)


async def send_files_async(client: AsyncTransport, task: Task, progress: Progress | None = None) -> dict[str, Any]:
    """The asynchronous twin of ``send_files`` (packing runs in a thread)."""
    import asyncio  # here: a sync client never needs the event loop's modules

    plan = _Plan(task, Settings.from_env(temporal=False))
    http: httpx.AsyncClient = client._http
    sent: set[str] = set()
    try:
        for name, source in plan.sources:
            packed = await asyncio.to_thread(plan.pack, name, source, progress)
            if packed.sha256 not in sent:
                await _send_one_async(http, name, source, packed, progress)
                sent.add(packed.sha256)
            _replace(plan.data, name, str(packed.ref))
    finally:
        plan.cleanup()
    return plan.data


async def _send_one_async(http: httpx.AsyncClient, name: str, source: str, packed: Packed,
                          progress: Progress | None) -> None:
    def event(state: str, done: int = 0) -> None:
        if progress:
            progress(UploadEvent(name, source, state, packed.size, done, packed.files, tuple(packed.skipped_links)))

    head = await http.head(_url(packed.sha256))
    if head.status_code == 200:
        event("already there", packed.size)
        return
    if head.status_code != 404:
        _refused(name, head)
    event("sending")

    async def body() -> AsyncIterator[bytes]:
        for data in _chunks(packed, lambda n: event("sending", n)):
            yield data

    resp = await http.put(_url(packed.sha256), content=body(),
                          headers={"content-type": "application/gzip", "content-length": str(packed.size)})
    _refused(name, resp)
    event("sent", packed.size)


# ----------------------------------------------------------------------------- listing


class UploadsMixin:
    """The caller's uploads, for :class:`styx.sdk.client.Client`."""

    _send: Callable[[Request], Any]  # from the transport it is mixed with

    def uploads(self) -> list[UploadInfo]:
        """Your uploads, most recently used first."""
        return [UploadInfo(**u) for u in self._send(Request("GET", "/api/v1/uploads"))]

    def delete_upload(self, sha256: str) -> None:
        """Forget one of your uploads (a task naming it is then refused)."""
        self._send(Request("DELETE", _url(sha256)))


class AsyncUploadsMixin:
    """The asynchronous twin of :class:`UploadsMixin`."""

    _send: Callable[[Request], Awaitable[Any]]

    async def uploads(self) -> list[UploadInfo]:
        return [UploadInfo(**u) for u in await self._send(Request("GET", "/api/v1/uploads"))]

    async def delete_upload(self, sha256: str) -> None:
        await self._send(Request("DELETE", _url(sha256)))
