"""Markers for tests that need an outside program.

On a developer's machine a missing program skips the test. Under CI (``CI`` set) it never does:
``.ci/run`` installs every one of these (scripts/install-system.sh, the dev extra), so a missing
program there is a broken install that must fail loudly, not a green run that tested nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def needs_tool(program: str, install_hint: str) -> pytest.MarkDecorator:
    """Skip unless ``program`` is on PATH, except under CI, where the test runs (and fails without it)."""
    missing = shutil.which(program) is None
    return pytest.mark.skipif(missing and not os.environ.get("CI"),
                              reason=f"{program} is not installed ({install_hint})")


def server_reachable(url: str) -> bool:
    """Whether the database server of SQLAlchemy ``url`` answers ``SELECT 1`` within two seconds."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure (driver missing, refused, auth) means "not here"
        return False


def needs_server(url: str, install_hint: str) -> pytest.MarkDecorator:
    """Skip unless the database server at ``url`` answers, except under CI, where the test runs (and fails)."""
    missing = not server_reachable(url)
    return pytest.mark.skipif(missing and not os.environ.get("CI"),
                              reason=f"no database server answers at {url} ({install_hint})")
