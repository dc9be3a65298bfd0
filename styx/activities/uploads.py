"""Uploads on a worker: fetched from the database by sha256, unpacked once, reused.

``UploadCache(root, db, max_unpacked_bytes)`` keeps ``<root>/<sha256>/``, the unpacked tree
of an upload (``STYX_HOME/uploads`` in the worker). ``path(ref)`` returns the tree, or the
member ``ref`` names, fetching it first if needed: the bytes are streamed from the database
row by row into a temporary file, checked against their sha256, unpacked with tarfile's
``data`` filter (nothing lands outside the tree, bounded in size) and renamed into place, so a
tree in the cache is always whole. Workers on one host share the cache under one file lock.
Trees unused for ``ttl`` seconds are removed when another is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path

from styx.archives import ArchiveError, unpack
from styx.contracts.uploads import UploadRef
from styx.db import Database, UploadGone
from styx.files import file_lock

#: A cached tree unused this long is removed (it is fetched again if needed).
CACHE_TTL_SECONDS = 3600.0


class UploadUnusable(ValueError):
    """The upload is gone, corrupt, or does not hold what the task names; the message says which."""


class UploadCache:
    def __init__(self, root: Path, db: Database, max_unpacked_bytes: int,
                 ttl: float = CACHE_TTL_SECONDS) -> None:
        self.root = root
        self.db = db
        self.max_unpacked_bytes = max_unpacked_bytes
        self.ttl = ttl

    def path(self, ref: UploadRef) -> Path:
        """The unpacked upload (or its member ``ref.member``) on this worker. Blocking: call it
        in a thread. Raises ``UploadUnusable``."""
        tree = self._tree(ref.sha256)
        target = (tree / ref.member).resolve() if ref.member else tree
        if not target.is_relative_to(tree.resolve()) or not (target.is_file() or target.is_dir()):
            raise UploadUnusable(f"upload {ref.sha256[:12]}… holds no file or directory {ref.member!r}")
        return target

    def _tree(self, sha256: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tree = self.root / sha256
        # One lock for the cache: fetches on this host queue, and pruning never races a fetch.
        with file_lock(self.root / ".lock"):
            if not tree.is_dir():
                self._fetch(sha256, tree)
            os.utime(tree)  # in use: pruning keeps it
            self._prune(keep=sha256)
        return tree

    def _fetch(self, sha256: str, tree: Path) -> None:
        work = self.root / f".{sha256[:16]}.{secrets.token_hex(4)}.tmp"
        work.mkdir()
        try:
            archive = work / "upload.tar.gz"
            digest = hashlib.sha256()
            try:
                with open(archive, "wb") as out:
                    for chunk in self.db.uploads.read(sha256):
                        digest.update(chunk)
                        out.write(chunk)
            except UploadGone as err:
                raise UploadUnusable(f"{err}; launch the task again to send it") from None
            if digest.hexdigest() != sha256:
                raise UploadUnusable(f"upload {sha256[:12]}… is corrupt in the database (its bytes hash to "
                                     f"{digest.hexdigest()[:12]}…)")
            try:
                unpack(archive, work / "tree", self.max_unpacked_bytes)
            except ArchiveError as err:
                raise UploadUnusable(f"upload {sha256[:12]}…: {err}") from None
            os.rename(work / "tree", tree)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _prune(self, keep: str) -> None:
        cutoff = time.time() - self.ttl
        for entry in self.root.iterdir():
            if entry.name == keep or entry.name.startswith(".") or not entry.is_dir():
                continue
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)
