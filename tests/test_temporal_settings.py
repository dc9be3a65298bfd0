"""Temporal's own settings (``TEMPORAL_*``, the profile file) reach ``Settings`` as before,
though ``temporalio`` is now imported only when one of them is there: the CLI, which talks to
the API only, pays nothing for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from styx.config import Settings


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Temporal variable, no profile file: a fresh home."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_") or name in ("STYX_TEMPORAL_ADDRESS", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("STYX_HOME", str(tmp_path / "styx"))
    return tmp_path


def test_temporal_variables_are_honoured(bare_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().external_temporal is None
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "team-a")
    settings = Settings.from_env()
    assert (settings.external_temporal, settings.namespace) == ("temporal.internal:7233", "team-a")
    # The SDK and the CLI ask for none of it.
    assert Settings.from_env(temporal=False).external_temporal is None


def test_a_profile_file_is_found_with_no_variable_set(bare_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = bare_env / "xdg" / "temporalio" / "temporal.toml"
    profile.parent.mkdir(parents=True)
    profile.write_text('[profile.default]\naddress = "from-profile.internal:7233"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(bare_env / "xdg"))
    assert Settings.from_env().external_temporal == "from-profile.internal:7233"


def test_with_nothing_set_settings_load_no_temporalio(bare_env: Path) -> None:
    code = "import sys; from styx.config import Settings; Settings.from_env(); print('temporalio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
