"""``python -m styx.gitserver``: the same as ``styx gitserver``."""

from styx.config import Settings
from styx.gitserver.server import run_gitserver

if __name__ == "__main__":
    run_gitserver(Settings.from_env())
