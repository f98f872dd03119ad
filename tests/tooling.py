"""Markers for tests that need an outside program or the ../shared data.

On a developer's machine a missing program skips the test. Under CI (``CI`` set) it never does:
``.ci/run`` installs every one of these (scripts/install-system.sh, the dev extra), so a missing
program there is a broken install that must fail loudly, not a green run that tested nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def needs_tool(program: str, install_hint: str) -> pytest.MarkDecorator:
    """Skip unless ``program`` is on PATH, except under CI, where the test runs (and fails without it)."""
    missing = shutil.which(program) is None
    return pytest.mark.skipif(missing and not os.environ.get("CI"),
                              reason=f"{program} is not installed ({install_hint})")


SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(relative: str, marker_file: str = "") -> Path:
    """``../shared/<relative>``; a skip on a developer's machine without it, a failure under CI (which has it).

    Args:
        relative: the folder under ``../shared`` (e.g. ``datasets/spider``).
        marker_file: a file inside it that must exist too (e.g. ``dev.json``).
    """
    path = SHARED_DIR / relative
    present = (path / marker_file).is_file() if marker_file else path.is_dir()
    if not present:
        what = f"../shared/{relative}" + (f"/{marker_file}" if marker_file else "")
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing under CI: the CI machine always has ../shared")
        pytest.skip(f"{what} is not present")
    return path


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


def git(repo: Path, *args: str) -> str:
    """``git -C repo ARGS`` with a throw-away identity; its stdout, stripped (raises when git fails)."""
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()
