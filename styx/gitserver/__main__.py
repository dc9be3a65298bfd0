"""``python -m styx.gitserver``: the same as ``styx gitserver``."""

import sys

from styx.config import Settings
from styx.gitserver.server import run_gitserver

if __name__ == "__main__":
    # The push runs' repository reads run here, on the host that has the repositories.
    from styx.workers.gitqueue import serve_repo_activities

    try:
        run_gitserver(Settings.from_env(), companions=[serve_repo_activities])
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
