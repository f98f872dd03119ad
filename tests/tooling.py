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
