"""Shared fixtures live in tests/fixtures/; each module there is a pytest plugin.

Every process a test starts inherits this environment: boto3 must never walk its credential
chain to the instance-metadata address (a packet off the machine), whatever a test forgets.
"""

import os

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.temporal",
    "tests.fixtures.stack",
    "tests.fixtures.moto",
    "tests.fixtures.git",
    "tests.fixtures.ssh",
]
