"""Shared fixtures live in tests/fixtures/; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.temporal",
    "tests.fixtures.stack",
    "tests.fixtures.moto",
    "tests.fixtures.git",
    "tests.fixtures.ssh",
]
