"""Alembic migrations of the state database; run them with :func:`styx.db.migrate`.

To add one (``--rev-id`` keeps revision ids readable: ``0003_users``)::

    alembic -c styx/migrations/alembic.ini revision --autogenerate --rev-id 0003_users -m "users"

then read and edit the generated file in ``versions/`` before committing it. Migrations
spell their columns out instead of importing the models, so they keep describing the
schema as it was when they were written.
"""
