"""Users, their API tokens and SSH keys.

Only an admin creates, disables and enables users (never themselves); the new user's first
token is in the answer, once. A user manages their own keys and tokens (list, create with an
optional expiry, revoke); an admin anyone's. A revoked or expired token, or a disabled user,
is refused from the next request on (``styx.db.users.UserStore.check_token``).

Limits (``/users/{name}/limits``): an admin sets how many live clusters, and nodes over
them, a user may hold (``styx.services.quotas`` enforces them at launch); a user reads their
own, with what they hold now.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Body, HTTPException, status

from styx import auth
from styx.api.deps import CurrentUser, PathId, StateDep
from styx.db import AlreadyExists, ApiToken, LimitReached, SshKey, User, UserNotFound, utcnow
from styx.gitserver.names import InvalidName, check_user_name
from styx.contracts.rest_repos import (
    KeyCreate,
    KeyInfo,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    UserCreate,
    UserCreated,
    UserInfo,
    UserLimits,
    UserLimitsUpdate,
)
from styx.services import quotas

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def _info(user: User) -> UserInfo:
    return UserInfo(name=user.name, is_admin=user.is_admin, created_at=user.created_at, disabled=user.disabled)


def _token_info(token: ApiToken) -> TokenInfo:
    return TokenInfo(id=token.token_id, user=token.user_name, description=token.description,
                     created_at=token.created_at, expires_at=token.expires_at, last_used_at=token.last_used_at,
                     expired=token.expires_at is not None and token.expires_at <= utcnow())


def _key_info(key: SshKey) -> KeyInfo:
    assert key.id is not None
    return KeyInfo(id=key.id, user=key.user_name, fingerprint=key.fingerprint, title=key.title,
                   public_key=key.public_key, created_at=key.created_at)


def _require_admin(user: User) -> None:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin can do this")


async def _self_or_admin(state: StateDep, caller: User, name: str) -> User:
    if caller.name != name and not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you can only manage your own account, not {name!r}")
    target = caller if caller.name == name else await asyncio.to_thread(state.db.users.get, name)
    if target is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {name!r} not found")
    return target


@router.post("", status_code=201, response_model=UserCreated, summary="Create a user (admin)")
async def create_user(req: UserCreate, state: StateDep, caller: CurrentUser) -> UserCreated:
    """Returns the user's first API token; it is shown only this once."""
    _require_admin(caller)
    try:
        check_user_name(req.name)
    except InvalidName as err:
        raise HTTPException(422, str(err)) from None
    try:
        user = await asyncio.to_thread(state.db.users.create, req.name, is_admin=req.admin)
    except AlreadyExists as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    made = auth.new_token()
    await asyncio.to_thread(state.db.users.add_token, user.name, made.token_id, made.salt, made.digest,
                            f"created by {caller.name}")
    return UserCreated(**_info(user).model_dump(), token=made.token)


@router.get("", response_model=list[UserInfo], summary="List users")
async def list_users(state: StateDep, caller: CurrentUser) -> list[UserInfo]:
    return [_info(u) for u in await asyncio.to_thread(state.db.users.list)]


@router.get("/me", response_model=UserInfo, summary="Who the token belongs to")
async def me(caller: CurrentUser) -> UserInfo:
    return _info(caller)


@router.post("/{name}/disable", response_model=UserInfo, summary="Disable a user (admin)")
async def disable_user(name: str, state: StateDep, caller: CurrentUser) -> UserInfo:
    """Their API tokens and SSH keys are refused from the next request on (API, git over HTTP
    and SSH); nothing of theirs is deleted, and `enable` lets them in again."""
    _require_admin(caller)
    if name == caller.name:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot disable yourself; ask another admin")
    return await _set_disabled(state, name, True)


@router.post("/{name}/enable", response_model=UserInfo, summary="Enable a disabled user (admin)")
async def enable_user(name: str, state: StateDep, caller: CurrentUser) -> UserInfo:
    _require_admin(caller)
    return await _set_disabled(state, name, False)


async def _set_disabled(state: StateDep, name: str, disabled: bool) -> UserInfo:
    try:
        return _info(await asyncio.to_thread(state.db.users.set_disabled, name, disabled))
    except UserNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {name!r} not found") from None


@router.get("/{name}/tokens", response_model=list[TokenInfo], summary="A user's API tokens")
async def list_tokens(name: str, state: StateDep, caller: CurrentUser) -> list[TokenInfo]:
    """Ids, descriptions, creation, expiry and last use; never the tokens themselves."""
    target = await _self_or_admin(state, caller, name)
    return [_token_info(t) for t in await asyncio.to_thread(state.db.users.list_tokens, target.name)]


@router.post("/{name}/tokens", status_code=201, response_model=TokenCreated, summary="Create another API token")
async def create_token(name: str, state: StateDep, caller: CurrentUser,
                       req: TokenCreate | None = Body(default=None)) -> TokenCreated:
    """The token is in the answer, once. With ``expires_in_seconds`` it stops working then."""
    target = await _self_or_admin(state, caller, name)
    req = req or TokenCreate()
    made = auth.new_token()
    expires_at = None if req.expires_in_seconds is None else utcnow() + timedelta(seconds=req.expires_in_seconds)
    try:
        row = await asyncio.to_thread(
            lambda: state.db.users.add_token(target.name, made.token_id, made.salt, made.digest,
                                             req.description or f"created by {caller.name}", expires_at=expires_at,
                                             limit=state.settings.max_tokens_per_user))
    except LimitReached as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    return TokenCreated(**_token_info(row).model_dump(), token=made.token)


@router.delete("/{name}/tokens/{token_id}", status_code=204, summary="Revoke an API token")
async def revoke_token(name: str, token_id: str, state: StateDep, caller: CurrentUser) -> None:
    """Refused from the next request on, everywhere (API, git over HTTP)."""
    target = await _self_or_admin(state, caller, name)
    if not await asyncio.to_thread(state.db.users.revoke_token, target.name, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {target.name!r} has no API token {token_id!r}")


@router.post("/{name}/keys", status_code=201, response_model=KeyInfo, summary="Add an SSH public key")
async def add_key(name: str, req: KeyCreate, state: StateDep, caller: CurrentUser) -> KeyInfo:
    from styx.gitserver.ssh import parse_public_key

    target = await _self_or_admin(state, caller, name)
    try:
        _key, fingerprint, normalised = parse_public_key(req.public_key)
    except ValueError as err:
        raise HTTPException(422, f"public_key: {err}") from None
    title = req.title or (req.public_key.split(None, 2)[2].strip() if len(req.public_key.split(None, 2)) > 2 else None)
    try:
        key = await asyncio.to_thread(state.db.users.add_ssh_key, target.name, fingerprint, normalised, title)
    except AlreadyExists:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"the key {fingerprint} is already registered (to you or to another user)") from None
    except UserNotFound as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from None
    return _key_info(key)


@router.get("/{name}/keys", response_model=list[KeyInfo], summary="A user's SSH keys")
async def list_keys(name: str, state: StateDep, caller: CurrentUser) -> list[KeyInfo]:
    target = await _self_or_admin(state, caller, name)
    return [_key_info(k) for k in await asyncio.to_thread(state.db.users.list_ssh_keys, target.name)]


@router.delete("/{name}/keys/{key_id}", status_code=204, summary="Remove an SSH key")
async def delete_key(name: str, key_id: PathId, state: StateDep, caller: CurrentUser) -> None:
    target = await _self_or_admin(state, caller, name)
    if not await asyncio.to_thread(state.db.users.delete_ssh_key, target.name, key_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {name!r} has no key {key_id}")


def _limits(state: StateDep, user: User) -> UserLimits:
    now = quotas.limits_of(state.db, state.settings, user)
    return UserLimits(user=user.name, is_admin=user.is_admin, max_clusters=user.max_clusters,
                      max_nodes=user.max_nodes, default_max_clusters=state.settings.default_max_clusters,
                      default_max_nodes=state.settings.default_max_nodes, effective_max_clusters=now.max_clusters,
                      effective_max_nodes=now.max_nodes, clusters=now.clusters, nodes=now.nodes)


@router.get("/{name}/limits", response_model=UserLimits, summary="A user's limits and usage")
async def get_limits(name: str, state: StateDep, caller: CurrentUser) -> UserLimits:
    """How many live clusters, and nodes over them, the user may hold and holds now (the
    user themselves or an admin)."""
    target = await _self_or_admin(state, caller, name)
    return await asyncio.to_thread(_limits, state, target)


@router.put("/{name}/limits", response_model=UserLimits, summary="Set a user's limits (admin)")
async def set_limits(name: str, req: UserLimitsUpdate, state: StateDep, caller: CurrentUser) -> UserLimits:
    """Fields sent are set (null: back to the default, ``STYX_DEFAULT_MAX_CLUSTERS`` /
    ``STYX_DEFAULT_MAX_NODES``); fields left out keep their value. Clusters the user holds
    already are left alone; a limit only refuses new launches. Admins are never limited."""
    _require_admin(caller)
    changes = req.model_dump(include=req.model_fields_set)
    try:
        user = await asyncio.to_thread(state.db.users.set_limits, name, **changes)
    except UserNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {name!r} not found") from None
    return await asyncio.to_thread(_limits, state, user)
