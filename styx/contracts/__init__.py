"""The contracts layer: every dataclass and status enum that workflows, activities, the API,
the SDK and the CLI exchange. Plain data only: this package imports nothing of Styx but
itself, and nothing that does I/O.

- ``clusters``: ``ClusterStatus``, the cluster workflow's inputs and outputs, workflow ids.
- ``jobs``: ``JobStatus`` and its terminal set, the job workflow's and run activities' shapes.
- ``providers``: what the provider activities take and return, and the ``NodeEndpoint``.
- ``pushes``: ``PushRunStatus`` and the push workflow's shapes.
- ``search``: the Temporal search attributes Styx registers.
- ``rest``: the REST API's request and response models (shared by the API, SDK and CLI).

One dataclass in, one dataclass out; adding a field with a default never breaks a running
workflow.
"""
