"""The SSH-pool provider: ``provider`` (checking, claiming and cleaning hosts), ``config``
(``ssh_pools.yaml``), ``reservations`` (which cluster holds which host), ``known_hosts``
(host keys) and ``errors``."""
