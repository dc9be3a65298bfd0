"""Upload archives (``.tar.gz``) on the server side: checked when they arrive, unpacked on a
worker. Both read the archive as a stream, bounded in what it may unpack to, and refuse with
``ArchiveError`` (a message a user can act on) anything tarfile's ``data`` filter refuses:
absolute names, ``..``, links out of the tree, devices.

The client side (packing, deterministic) is ``styx.sdk.uploads``.
"""

from __future__ import annotations

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
