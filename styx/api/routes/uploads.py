"""Uploads: the archives a task's ``workdir`` and ``file_mounts`` name (``upload:<sha256>``).

- ``HEAD /api/v1/uploads/{sha256}``: 200 when the caller may use it already (the SDK then
  sends nothing), 404 otherwise.
- ``PUT /api/v1/uploads/{sha256}``: the archive, streamed. The body is spooled (not held in
  memory), must hash to the sha256 the URL names (else 422, nothing stored), be a ``.tar.gz``
  that unpacks safely within ``STYX_MAX_UNPACKED_BYTES``, and be at most
  ``STYX_MAX_UPLOAD_BYTES`` (413). It is stored in the database, which every worker reads;
  the caller becomes one of its owners. Over the caller's quota, their least recently used
  uploads are evicted, but never one live work names (409 when only those could make room).
- ``GET /api/v1/uploads``: the caller's uploads; ``DELETE /api/v1/uploads/{sha256}``: forget one.

Only an owner (one who sent the bytes) or an admin may name an upload in a task:
``upload_access(state, user)`` is the check ``styx.services.launch.load_task`` is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.requests import ClientDisconnect

from styx.api.deps import CurrentUser, StateDep
from styx.archives import ArchiveError, check_archive
from styx.contracts.uploads import UPLOAD_CHUNK_BYTES, UploadInfo, is_sha256
from styx.db import UploadQuotaFull, User

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])
#: Where the API's limit middleware lets larger bodies through (up to STYX_MAX_UPLOAD_BYTES).
UPLOAD_PATH_PREFIX = router.prefix + "/"


def upload_access(state: StateDep, user: User) -> Callable[[str], bool]:
    """Whether ``user`` may name the upload ``sha256`` in a task (marking it used)."""
    return lambda sha256: state.db.uploads.use(sha256, user)


def _check_name(sha256: str) -> None:
    if not is_sha256(sha256):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"sha256: an upload is named by the lowercase hex sha256 of its bytes (got {sha256[:80]!r})")


@router.head("/{sha256}", summary="Whether the caller has this upload already")
async def has_upload(sha256: str, state: StateDep, user: CurrentUser) -> Response:
    _check_name(sha256)
    if not await asyncio.to_thread(state.db.uploads.use, sha256, user):
        return Response(status_code=404)
    return Response(status_code=200)


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while data := spool.read(UPLOAD_CHUNK_BYTES):
        yield data


@router.put("/{sha256}", status_code=201, response_model=UploadInfo, summary="Send an upload (a .tar.gz)")
async def put_upload(sha256: str, request: Request, response: Response, state: StateDep,
                     user: CurrentUser) -> UploadInfo:
    """Store the body (a ``.tar.gz``) as the upload ``sha256``: 201 when its bytes are new,
    200 when the server had them already (the caller is now an owner either way)."""
    _check_name(sha256)
    settings = state.settings
    limit, quota = settings.max_upload_bytes, settings.upload_quota_bytes
    digest, size = hashlib.sha256(), 0
    with tempfile.SpooledTemporaryFile(max_size=UPLOAD_CHUNK_BYTES) as spool:
        try:
            async for data in request.stream():
                size += len(data)
                if size > limit:
                    raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                        f"upload larger than {limit} bytes (STYX_MAX_UPLOAD_BYTES)")
                digest.update(data)
                spool.write(data)
        except ClientDisconnect:  # the limit middleware answered 413 already
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "upload too large") from None
        if digest.hexdigest() != sha256:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                                f"body: its sha256 is {digest.hexdigest()}, not the {sha256} the URL names "
                                "(sent incomplete or changed?); nothing was stored")
        if size > quota:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"upload of {size} bytes is larger than a user's upload quota of {quota} bytes "
                                "(STYX_UPLOAD_QUOTA_BYTES)")
        spool.seek(0)
        try:
            await asyncio.to_thread(check_archive, spool, settings.max_unpacked_bytes)
        except ArchiveError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"body: {err}; nothing was stored") from None
        try:
            stored, _ = await asyncio.to_thread(state.db.uploads.store, sha256, size, _chunks(spool), user.name,
                                                quota)
        except UploadQuotaFull as err:
            raise HTTPException(status.HTTP_409_CONFLICT, f"{err}; nothing was stored") from None
    row = await asyncio.to_thread(state.db.uploads.get, sha256)
    if row is None:  # pragma: no cover - just stored
        raise HTTPException(500, "the upload vanished as it was stored")
    if not stored:
        response.status_code = status.HTTP_200_OK
    return UploadInfo(sha256=sha256, size=row.size, created_at=row.created_at, stored=stored)


@router.get("", response_model=list[UploadInfo], summary="The caller's uploads, most recently used first")
async def list_uploads(state: StateDep, user: CurrentUser) -> list[UploadInfo]:
    rows = await asyncio.to_thread(state.db.uploads.list, user.name)
    return [UploadInfo(sha256=u.sha256, size=u.size, created_at=u.created_at, last_used_at=o.last_used_at)
            for u, o in rows]


@router.delete("/{sha256}", status_code=204, summary="Forget one of the caller's uploads")
async def delete_upload(sha256: str, state: StateDep, user: CurrentUser) -> Response:
    _check_name(sha256)
    if not await asyncio.to_thread(state.db.uploads.forget, sha256, user.name):
        raise HTTPException(404, f"you have no upload {sha256}")
    return Response(status_code=204)
