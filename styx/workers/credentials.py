"""The admin's credentials file, ``STYX_HOME/credentials``: written at ``styx up``, read by
the CLI and the SDK (``styx.sdk.client``)."""

from __future__ import annotations

import json

from styx import auth
from styx.config import Settings
from styx.db import Database, migrate
from styx.files import atomic_write


def ensure_admin_credentials(settings: Settings) -> str:
    """The admin's token from ``STYX_HOME/credentials`` (mode 0600), created on first start.

    Migrates the database first. A credentials file whose token the database no longer
    knows (a new DB) is replaced.
    """
    migrate(settings.db_url)
    db = Database(settings.db_url)
    path = settings.home / "credentials"
    try:
        token = json.loads(path.read_text())["token"]
        if db.users.authenticate_token(token) is not None:
            return token
    except (OSError, ValueError, KeyError):
        pass
    db.users.ensure("admin", is_admin=True)
    made = auth.new_token()
    db.users.add_token("admin", made.token_id, made.salt, made.digest, description="created by styx up")
    settings.home.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"url": settings.api_url, "user": "admin", "token": made.token}, indent=2))
    return made.token
