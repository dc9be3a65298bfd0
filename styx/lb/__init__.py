"""The services' load balancer (``styx lb``): a stateless async HTTP proxy.

- ``proxy``: the ASGI app of one service's port: picks a ready replica (round robin or least
  load), streams the request's answer back, and retries another replica when one refuses
  the connection; counts every request.
- ``server``: the process: reads every service's port and ready replicas from the database
  each ``STYX_LB_REFRESH_SECONDS``, opens and closes one listener per service, and reports
  the per-second request counts and its log lines back to the database (where the service
  workflow's autoscaler and `styx serve logs --load-balancer` read them).

Nothing is kept but what the database says and counts not yet reported: kill it and start
another (or run several), and requests resume where it listens.
"""
