"""Fixtures for tests that run real studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import Studies


@pytest.fixture
def studies(tmp_path: Path) -> Studies:
    home = tmp_path / "home"
    home.mkdir()
    return Studies(home)
