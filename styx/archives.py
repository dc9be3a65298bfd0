"""Upload archives (``.tar.gz``) on the server side: checked when they arrive, unpacked on a
worker. Both read the archive as a stream, bounded in what it may unpack to, and refuse with
``ArchiveError`` (a message a user can act on) anything tarfile's ``data`` filter refuses:
absolute names, ``..``, links out of the tree, devices.

The client side (packing, deterministic) is ``styx.sdk.uploads``; ``pack_tree`` packs a
pushed commit's tree on the git server's side the same way.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: Most members (files, directories, links) one upload may hold.
MAX_MEMBERS = 100_000
_CHECK_DEST = "/styx-upload-check"


class ArchiveError(ValueError):
    """Not a usable upload archive; the message says why."""


def _members(tar: tarfile.TarFile, dest: str, max_unpacked: int) -> Iterator[tarfile.TarInfo]:
    total = count = 0
    for member in tar:
        count += 1
        if count > MAX_MEMBERS:
            raise ArchiveError(f"the archive holds more than {MAX_MEMBERS} entries")
        total += max(member.size, 0)
        if total > max_unpacked:
            raise ArchiveError(f"the archive unpacks to more than {max_unpacked} bytes (STYX_MAX_UNPACKED_BYTES)")
        try:
            checked = tarfile.data_filter(member, dest)
        except tarfile.FilterError as err:
            raise ArchiveError(f"the archive has an entry that cannot be unpacked safely: {err}") from None
        if checked is not None:
            yield checked


def check_archive(fileobj: IO[bytes], max_unpacked: int) -> int:
    """Read the whole archive (without writing anything); return its number of entries."""
    count = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for member in _members(tar, _CHECK_DEST, max_unpacked):
                count += 1
                if member.isfile():  # read through, so a truncated archive is noticed here
                    source = tar.extractfile(member)
                    if source is not None:
                        while source.read(1 << 20):
                            pass
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        raise ArchiveError(f"not a .tar.gz archive: {err}") from None
    return count


def unpack(archive: Path, dest: Path, max_unpacked: int) -> None:
    """Unpack ``archive`` into the new directory ``dest`` (tarfile's ``data`` filter)."""
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(dest, members=_members(tar, str(dest), max_unpacked), filter="data")
    except (tarfile.TarError, zlib.error, EOFError) as err:
        raise ArchiveError(f"not a .tar.gz archive: {err}") from None



def pack_tree(root: Path, out: IO[bytes]) -> None:
    """Write the directory ``root`` to ``out`` as a ``.tar.gz`` that depends only on its
    content (names sorted, times, owners and the gzip header zeroed), so packing one tree
    twice names one upload. Files, directories and symbolic links; modes 0755 or 0644."""
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        # Depth first, in name order, without recursion (a tree may nest deeply).
        todo = [(child, child.name) for child in sorted(root.iterdir(), key=lambda p: p.name, reverse=True)]
        while todo:
            path, name = todo.pop()
            st = path.lstat()
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISLNK(st.st_mode):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                todo.extend((child, f"{name}/{child.name}")
                            for child in sorted(path.iterdir(), key=lambda p: p.name, reverse=True))
            elif stat.S_ISREG(st.st_mode):
                info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
