"""Shared set-up: the order files run in, the terminal the commands see, and tiny datasets
in the official file formats (no network here)."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest

# Each file runs on one xdist worker (`make test`), in this order: the longest first (their
# seconds in an xdist run on the 2-core AVX-512 machine kind, 2026-12-04), so that no long
# file starts last while the other worker idles; the short ones fill the end. Files not
# named are short and come after these. `make test` passes --no-loadscope-reorder: xdist
# would otherwise hand out the files with the most tests first (tests/README.md).
LONGEST_FILES = ("test_study.py", "test_distributed.py", "test_tracking_server.py",
                 "test_faults.py", "test_journal.py", "test_chaos.py", "test_cli_train.py",
                 "test_multinode.py", "test_autoscaling_cluster.py", "test_quickstart.py",
                 "test_commands_ui.py", "test_folder_study.py", "test_promises.py",
                 "test_node_loss.py", "test_report.py", "test_local_cluster.py",
                 "test_models.py", "test_constraints.py", "test_search_efficiency.py",
                 "test_ray_session.py", "test_readme_paths.py", "test_scale.py",
                 "test_pretrained_study.py")


def pytest_configure(config: pytest.Config) -> None:
    ensure_ray_token()


def ensure_ray_token() -> None:
    """This machine's Ray token (~/.ray/auth_token), made before any test runs, as on a machine
    that has run a study or a cluster before. The session makes it anyway (the shared Ray's
    `local.sh up`), but then in the middle of the run: a fork server (tests/forked_cli.py)
    that had imported Ray before it existed stayed in Ray's mode without a token, and the
    commands it forked afterwards were refused by their own Ray ("Authentication token is
    missing or incorrect": two tests on a fresh machine, 2026-12-04). Made under the lock
    that the xdist workers, studies and local.sh share."""
    from search.study.ray_token import ensure_token

    ensure_token()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable
    skip_gpu_tests_without_cuda(items)


def skip_gpu_tests_without_cuda(items: list[pytest.Item]) -> None:
    """Tests marked `gpu` (`gpu(count=2)`: that many GPUs) run where torch sees CUDA GPUs
    (`make test-gpu`) and are skipped, saying why, everywhere else."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return  # no torch import for runs without gpu tests
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in marked:
        needed = item.get_closest_marker("gpu").kwargs.get("count", 1)
        if available < needed:
            item.add_marker(pytest.mark.skip(
                reason=f"needs {needed} CUDA GPU{'s' if needed > 1 else ''}; torch sees {available}"))


# xdist workers get COLUMNS=80 (and LINES) in their environment; a user's command run by a
# script or CI has none. Without this, every command a test runs fits its tables to 80
# columns, and `ps` cuts the command lines that cluster/local.sh reads.
for _variable in ("COLUMNS", "LINES"):
    os.environ.pop(_variable, None)


# Ctrl-C reaches the commands the tests start, as it does a user's. A shell that starts a
# command in the background (`make test &`, `nohup ... &`) starts it with SIGINT ignored; exec
# keeps an ignored signal, so pytest, its xdist workers and every command a test starts would
# ignore it too: the resume-after-Ctrl-C test's `train` then ran on to its end (found by a
# warning here: every xdist worker of a backgrounded run began with SIGINT ignored).
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test starts from the same environment: code run in-process may set variables
    (MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI) that every later command a test
    starts with this environment would inherit, pointing it at another test's store."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def write_cifar10(root: Path, per_batch: int = 20, test: int = 30, seed: int = 0) -> None:
    """The layout of cifar-10-python.tar.gz: pickled dicts with uint8 rows of 3072 bytes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        batch = {
            "batch_label": f"{name} of 5",
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


def write_cifar100(root: Path, train: int = 60, test: int = 20, seed: int = 0) -> None:
    """The layout of cifar-100-python.tar.gz: `train` and `test` with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        batch = {
            "fine_labels": rng.integers(0, 100, n).tolist(),
            "coarse_labels": rng.integers(0, 20, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)


def write_svhn(root: Path, train: int = 50, test: int = 20, seed: int = 0) -> None:
    """The cropped-digits .mat files: X is (32, 32, 3, N), y is (N, 1) with 10 meaning 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        savemat(folder / name, {"X": x, "y": y})


@pytest.fixture
def fake_datasets(tmp_path: Path) -> Path:
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_svhn(tmp_path)
    return tmp_path
