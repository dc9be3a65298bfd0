"""The `styx` command line: typer commands that talk to the API through the SDK.

``main.py`` holds the root command; ``clusters.py``, ``git.py``, ``access.py`` and
``uploads.py`` the command groups; ``console.py`` what they print with, ``table.py`` the
plain tables of the long listings. Each command imports what it uses when it runs (see
``console.py``): a command's time is the user's.
"""

import sys

# httpx imports its own command line at import (click, rich's progress bars, pygments: about
# 70 ms) whenever those are installed; Styx's CLI never runs it, so that import is skipped in
# this process (httpx then keeps a stub ``httpx.main``). The SDK alone leaves httpx as it is.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
