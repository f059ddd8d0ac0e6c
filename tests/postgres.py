"""The PostgreSQL server the tests use (127.0.0.1:5432 on these machines): one helper for all.

    require_postgres()                          # fails (or skips, if asked) when it does not answer
    with fresh_database("rs_test") as uri:      # postgresql://postgres@127.0.0.1:5432/rs_test_1a2b3c4d

Every CI machine runs this server, so a test that needs it and cannot reach it FAILS with the
reason: a missing driver, a password requirement or a bug must not pass as a skip. Where no server
exists (a laptop), `RESNET_SEARCH_TEST_POSTGRES=skip` turns exactly that failure into a skip.
Host, port and user come from RESNET_SEARCH_TEST_PG_HOST/_PORT/_USER.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

HOST = os.environ.get("RESNET_SEARCH_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("RESNET_SEARCH_TEST_PG_PORT", "5432"))
USER = os.environ.get("RESNET_SEARCH_TEST_PG_USER", "postgres")
SKIP_VARIABLE = "RESNET_SEARCH_TEST_POSTGRES"


def database_uri(name: str, driver: str = "") -> str:
    """`postgresql://` (SQLAlchemy's default driver) or e.g. `postgresql+psycopg2://` with driver."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{USER}@{HOST}:{PORT}/{name}"


def admin_connection():
    import psycopg

    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres",
                           autocommit=True, connect_timeout=5)


def require_postgres() -> None:
    """Return when the server answers; otherwise fail with why (or skip when asked to)."""
    try:
        with admin_connection():
            return
    except Exception as error:  # noqa: BLE001 - reported, never swallowed
        lines = str(error).strip().splitlines()
        reason = f"PostgreSQL at {HOST}:{PORT} (user {USER}): {lines[0] if lines else type(error).__name__}"
    if os.environ.get(SKIP_VARIABLE) == "skip":
        pytest.skip(f"{reason} ({SKIP_VARIABLE}=skip)")
    pytest.fail(f"{reason}\nEvery CI machine runs this server; on a machine without one set "
                f"{SKIP_VARIABLE}=skip to skip these tests.", pytrace=False)


@contextlib.contextmanager
def fresh_database(prefix: str = "rs_test", driver: str = "") -> Iterator[str]:
    """A new, empty database with a unique name; dropped (connections and all) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin_connection() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_uri(name, driver)
    finally:
        with admin_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
