"""Fixtures for tests that run real studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import SHARED_RAY, Studies


@pytest.fixture
def studies(tmp_path: Path) -> Studies:
    home = tmp_path / "home"
    home.mkdir()
    return Studies(home)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_ray():
    """The Ray that the tests' studies join (study_helpers.SharedRay) ends with the session."""
    yield
    SHARED_RAY.stop()
