"""The Styx git server: smart HTTP and SSH over repositories in ``STYX_HOME/git``.

Modules: ``names`` (validated repository and ref names), ``access`` (one access function
for every transport and the API), ``storage`` (repositories on disk), ``service`` (what
both transports share), ``http`` and ``ssh`` (the transports), ``hooks`` (push hooks),
``triggers`` (``.styx.yaml``), ``pushes`` (starting PushWorkflow), ``server`` (the process).
"""
