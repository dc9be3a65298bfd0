"""Users, their API tokens and their SSH keys: ``UserStore`` (``db.users``).

- Users: ``ensure`` (idempotent), ``create`` (``AlreadyExists`` if taken), ``get``, ``list``.
- API tokens: ``add_token`` stores a salted hash made by ``styx.auth``;
  ``authenticate_token`` checks a presented token against it.
- SSH keys: ``add_ssh_key``, ``get_ssh_key``, ``list_ssh_keys``, ``delete_ssh_key``, and
  ``by_ssh_key``: the user a (signature-verified) key belongs to.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from styx import auth
from styx.db.base import Store
from styx.db.engine import utcnow
from styx.db.models import AlreadyExists, ApiToken, SshKey, User, UserNotFound


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

    # --- API tokens

    def add_token(self, user: str, token_id: str, salt: str, digest: str, description: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(ApiToken.__table__).values(  # type: ignore[attr-defined]
                token_id=token_id, user_name=user, salt=salt, digest=digest, description=description,
                created_at=utcnow()))

    def authenticate_token(self, token: str) -> User | None:
        """The user a token belongs to, or None for an unknown, malformed or wrong token."""
        parts = auth.split_token(token)
        if parts is None:
            return None
        row = self._fetch(ApiToken, parts[0])
        if row is None or not auth.matches(parts[1], row.salt, row.digest):
            return None
        return self.get(row.user_name)

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
        """The user a (signature-verified) public key belongs to, or None."""
        key = self.get_ssh_key(fingerprint)
        return None if key is None else self.get(key.user_name)

    # --- (last: a method named ``list`` would shadow the builtin in annotations below it)

    def list(self) -> list[User]:
        with self._session() as session:
            return list(session.exec(select(User).order_by(User.name)).all())
