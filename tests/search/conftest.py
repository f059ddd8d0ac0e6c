"""Fixtures for tests that run real studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from forked_cli import FORK_SERVER
from reported_study import REPORT_STUDY, STUDY_NAME
from study_helpers import SHARED_RAY, Studies


@pytest.fixture
def studies(tmp_path: Path) -> Studies:
    home = tmp_path / "home"
    home.mkdir()
    return Studies(home)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_ray():
    """The Ray that the tests' studies join (study_helpers.SharedRay) and the server their
    commands fork from (forked_cli.FORK_SERVER) end with the session."""
    yield
    FORK_SERVER.stop()
    SHARED_RAY.stop()


@pytest.fixture(scope="session")
def report_study(tmp_path_factory) -> Studies:
    """One finished 4-trial digits study, shared by the report and `studies` tests."""
    home = tmp_path_factory.mktemp("report") / "home"
    home.mkdir()
    studies = Studies(home)
    result = studies.cli("run", str(studies.write(STUDY_NAME, REPORT_STUDY.format(name=STUDY_NAME))))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return studies


@pytest.fixture(scope="session")
def report_dir(report_study, tmp_path_factory) -> Path:
    """`resnet-search report` of the shared study: its files, also logged to the study run."""
    out = tmp_path_factory.mktemp("page") / "out"
    result = report_study.cli("report", STUDY_NAME, "--tracking-uri", report_study.tracking_uri,
                              "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out / "report.html") in result.stdout
    return out
