"""Providers: where a cluster's nodes come from. Each is a package with a ``provider.py``
whose class satisfies ``base.Provider`` (plan, provision, start, stop, terminate,
describe_nodes, check — one signature each, the same for all):

- ``local/``: node processes on this machine (an SSH server each, on loopback);
- ``aws/``: EC2 instances, found by their tags;
- ``ssh/``: machines the user already has, reserved from pools.

``base`` holds the protocol, ``Provisioned`` and the provider-neutral errors
(``CapacityError``, ``ProvisionError``, ``InvalidProviderRequest``); ``registry`` maps names
to provider instances. The worker builds the registry (``styx.workers.worker.build_providers``)
and the provider activities look each request's provider up in it, so adding a provider is
one new package here and one line in that registry.

Providers may import ``styx.contracts``, ``styx.ssh``, ``styx.files``, ``styx.catalog`` and
``styx.task``; never workflows, activities, the API or the CLI.
"""
