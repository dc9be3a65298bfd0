"""Users, their API tokens and their SSH keys: ``UserStore`` (``db.users``).

- Users: ``ensure`` (idempotent), ``create`` (``AlreadyExists`` if taken), ``get``, ``list``,
  ``set_disabled``: a disabled user's tokens and keys are refused at once; ``set_limits``:
  the clusters and nodes they may hold (``styx.services.quotas`` enforces them).
- API tokens: ``add_token`` stores a salted hash made by ``styx.auth`` (bounded per user,
  optionally expiring); ``check_token`` checks a presented token against it and says why
  it is refused (unknown or revoked, expired, disabled user); ``authenticate_token`` is its
  yes/no. ``list_tokens``, ``revoke_token`` (the row goes: the token is refused from then on).
- SSH keys: ``add_ssh_key``, ``get_ssh_key``, ``list_ssh_keys``, ``delete_ssh_key``, and
  ``by_ssh_key``: the user a (signature-verified) key belongs to — disabled or not, so the
  transport can refuse with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import select

from styx import auth
from styx.db.base import Store
from styx.db.engine import UTCDateTime, aware_utc, utcnow
from styx.db.models import AlreadyExists, ApiToken, LimitReached, SshKey, User, UserNotFound

#: ``last_used_at`` is written at most this often per token (a write per request would be a
#: write per API call).
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenCheck:
    """What ``check_token`` found: the user, or None and why (a sentence a user can act on)."""

    user: User | None
    problem: str | None = None


class UserStore(Store):
    # --- users

    def ensure(self, name: str, *, is_admin: bool = False) -> User:
        """The user ``name``, inserted if missing (an existing user is left as it is)."""
        with self._write() as conn:
            self._upsert(conn, User, {"name": name}, {}, {"is_admin": is_admin, "created_at": utcnow()})
            return self._fetch(User, name, conn=conn)

    def create(self, name: str, *, is_admin: bool = False) -> User:
        """Insert a new user; raises ``AlreadyExists`` if the name is taken."""
        try:
            with self._write() as conn:
                conn.execute(sa.insert(User.__table__).values(  # type: ignore[attr-defined]
                    name=name, is_admin=is_admin, created_at=utcnow()))
                return self._fetch(User, name, conn=conn)
        except IntegrityError:
            raise AlreadyExists(f"user {name!r} already exists") from None

    def get(self, name: str) -> User | None:
        return self._fetch(User, name)

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or enable again) ``name``; raises ``UserNotFound``."""
        table: sa.Table = User.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            if conn.execute(sa.update(table).where(table.c.name == name).values(disabled=disabled)).rowcount == 0:
                raise UserNotFound(name)
            return self._fetch(User, name, conn=conn)

    def set_limits(self, name: str, **limits: int | None) -> User:
        """Set ``max_clusters`` and/or ``max_nodes`` of ``name`` (those given; None: the
        default applies again); raises ``UserNotFound``."""
        unknown = set(limits) - {"max_clusters", "max_nodes"}
        if unknown:
            raise TypeError(f"not a user limit: {', '.join(sorted(unknown))}")
        table: sa.Table = User.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            query = sa.update(table).where(table.c.name == name)
            if limits:
                query = query.values(**limits)
            else:
                query = query.values(name=table.c.name)  # nothing to change: still say whether it exists
            if conn.execute(query).rowcount == 0:
                raise UserNotFound(name)
            return self._fetch(User, name, conn=conn)

    # --- API tokens

    def add_token(self, user: str, token_id: str, salt: str, digest: str, description: str | None = None,
                  *, expires_at: datetime | None = None, limit: int | None = None) -> ApiToken:
        """Store a token's hash. With ``limit``, ``LimitReached`` if the user holds that many
        unexpired tokens already."""
        table: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
        now = utcnow()
        with self._write() as conn:
            if limit is not None:
                live = conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(
                        table.c.user_name == user,
                        sa.or_(table.c.expires_at.is_(None),
                               table.c.expires_at > sa.bindparam("now", now, type_=UTCDateTime)))
                ).scalar_one()
                if live >= limit:
                    raise LimitReached(f"user {user!r} has {live} API tokens already, the most allowed "
                                       f"(STYX_MAX_TOKENS_PER_USER={limit}); revoke one first (`styx token revoke`)")
            conn.execute(sa.insert(table).values(
                token_id=token_id, user_name=user, salt=salt, digest=digest, description=description,
                created_at=now, expires_at=None if expires_at is None else aware_utc(expires_at)))
            return self._fetch(ApiToken, token_id, conn=conn)

    def get_token(self, token_id: str) -> ApiToken | None:
        return self._fetch(ApiToken, token_id)

    def list_tokens(self, user: str) -> list[ApiToken]:
        """A user's tokens, oldest first (hashes included: never hand these rows out as they are)."""
        with self._session() as session:
            query = select(ApiToken).where(ApiToken.user_name == user).order_by(
                ApiToken.created_at, ApiToken.token_id)  # type: ignore[arg-type]
            return list(session.exec(query).all())

    def revoke_token(self, user: str, token_id: str) -> bool:
        """Forget one of ``user``'s tokens; it is refused from the next request on. False if
        ``user`` has no such token."""
        table: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.token_id == token_id,
                                                       table.c.user_name == user)).rowcount > 0

    def check_token(self, token: str) -> TokenCheck:
        """Whose token this is, or why it is refused: unknown, malformed, wrong or revoked;
        expired; or its user is disabled. Notes when the token was last used."""
        invalid = TokenCheck(None, "invalid API token (unknown, revoked or mistyped)")
        parts = auth.split_token(token)
        if parts is None:
            return invalid
        row: ApiToken | None = self._fetch(ApiToken, parts[0])
        if row is None or not auth.matches(parts[1], row.salt, row.digest):
            return invalid
        now = utcnow()
        if row.expires_at is not None and row.expires_at <= now:
            return TokenCheck(None, f"API token {row.token_id} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC; "
                                    "use another token, or ask an admin for a new one")
        user = self.get(row.user_name)
        if user is None:
            return invalid
        if user.disabled:
            return TokenCheck(None, f"user {user.name!r} is disabled; an admin can enable it again "
                                    f"(`styx user enable {user.name}`)")
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            self._touch(row.token_id, now)
        return TokenCheck(user)

    def _touch(self, token_id: str, now: datetime) -> None:
        table: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
        try:
            with self._write() as conn:
                conn.execute(sa.update(table).where(table.c.token_id == token_id).values(last_used_at=now))
        except OperationalError:
            pass  # a busy database: the stamp is a convenience, the request must not fail for it

    def authenticate_token(self, token: str) -> User | None:
        """The (enabled) user a token belongs to, or None for an unknown, malformed, wrong,
        revoked or expired token, or a disabled user; ``check_token`` says which."""
        return self.check_token(token).user

    # --- SSH keys

    def add_ssh_key(self, user: str, fingerprint: str, public_key: str,
                    title: str | None = None) -> SshKey:
        """Register a public key; ``AlreadyExists`` if any user has it already."""
        if self.get(user) is None:
            raise UserNotFound(user)
        try:
            with self._write() as conn:
                conn.execute(sa.insert(SshKey.__table__).values(  # type: ignore[attr-defined]
                    user_name=user, fingerprint=fingerprint, public_key=public_key, title=title,
                    created_at=utcnow()))
        except IntegrityError:
            raise AlreadyExists(f"the key {fingerprint} is already registered") from None
        return self.get_ssh_key(fingerprint)  # type: ignore[return-value]

    def get_ssh_key(self, fingerprint: str) -> SshKey | None:
        with self._session() as session:
            return session.exec(select(SshKey).where(SshKey.fingerprint == fingerprint)).first()

    def list_ssh_keys(self, user: str) -> list[SshKey]:
        with self._session() as session:
            return list(session.exec(select(SshKey).where(SshKey.user_name == user).order_by(SshKey.id)).all())

    def delete_ssh_key(self, user: str, key_id: int) -> bool:
        table: sa.Table = SshKey.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.id == key_id,
                                                       table.c.user_name == user)).rowcount > 0

    def by_ssh_key(self, fingerprint: str) -> User | None:
        """The user a (signature-verified) public key belongs to, or None. The user may be
        disabled: callers refuse those (``user.disabled``)."""
        key = self.get_ssh_key(fingerprint)
        return None if key is None else self.get(key.user_name)

    # --- (last: a method named ``list`` would shadow the builtin in annotations below it)

    def list(self) -> list[User]:
        with self._session() as session:
            return list(session.exec(select(User).order_by(User.name)).all())
