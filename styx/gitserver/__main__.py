"""``python -m styx.gitserver``: the same as ``styx gitserver``."""

import sys

from styx.config import Settings
from styx.gitserver.server import run_gitserver

if __name__ == "__main__":
    try:
        run_gitserver(Settings.from_env())
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
