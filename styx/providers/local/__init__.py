"""The local provider: ``provider`` (clusters of node processes), ``nodeserver`` (the node's
SSH server program) and ``procs`` (the process table)."""
