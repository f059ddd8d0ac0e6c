"""`resnet-search train` and `evaluate` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=600)


def test_train_writes_checkpoint_and_metrics_and_evaluate_agrees(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--model", "wrn-10-2", "--dataset", "digits", "--epochs", "3",
                 "--optimizer", "nesterov", "--lr", "0.05", "--dropout", "0.1", "--out", str(out),
                 "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 3
    assert metrics["config"]["train"]["optimizer"] == "nesterov"
    assert metrics["config"]["model"]["dropout"] == 0.1
    assert metrics["parameters"] > 0 and 0 < metrics["test_accuracy"] <= 1
    assert "test accuracy" in result.stdout

    evaluated = cli("evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["split"] == "test" and report["images"] == 359
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=0.006)

    val = json.loads(cli("evaluate", "--checkpoint", str(out), "--split", "val",
                         "--json").stdout)
    assert val["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=0.01)

    other = cli("evaluate", "--checkpoint", str(out), "--dataset", "synthetic")
    assert other.returncode == 2
    assert "the model takes 1-channel images and predicts 10 classes, but synthetic has 3" in (
        other.stderr)
    not_a_checkpoint = cli("evaluate", "--checkpoint", str(out / "metrics.json"))
    assert not_a_checkpoint.returncode == 2
    assert "is not a resnet-search checkpoint" in not_a_checkpoint.stderr
    assert "weights_only" not in not_a_checkpoint.stderr  # never advise the unsafe load


def test_train_resumes_an_interrupted_run(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--model", "resnet-8", "--epochs", "1", "--out", str(out),
               "--quiet").returncode == 0
    result = cli("train", "--model", "resnet-8", "--epochs", "2", "--out", str(out), "--quiet",
                 "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr and "at epoch 1" in result.stderr
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "wrn-15-2"], "depth=15 is invalid for wrn"),
        (["--model", "vgg-16"], "unknown model 'vgg-16'"),
        (["--lr", "-1"], "argument --lr: '-1' must be > 0"),
        (["--epochs", "0"], "argument --epochs: '0' must be >= 1"),
        (["--optimizer", "lamb"], "argument --optimizer: invalid choice: 'lamb'"),
        (["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
        (["--dropout", "1.5"], "argument --dropout: '1.5' must be in [0, 1)"),
        (["--model", "preact-resnet-20", "--bn-position", "after_add"],
         "bn_position='after_add' needs family 'resnet'"),
        (["--dataset", "cifar10", "--root", "/nonexistent"],
         "dataset 'cifar10' not found"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--milestones", "0.5"], "--milestones needs --schedule milestones"),
        (["--schedule", "milestones", "--milestones", "1.5"],
         "milestones=[1.5] must be fractions of training in (0, 1)"),
    ],
)
def test_bad_train_arguments_give_one_line_and_exit_2(args, message, tmp_path):
    result = cli("train", *args, "--out", str(tmp_path / "x"), "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not (tmp_path / "x").exists()  # nothing started


def test_evaluate_a_missing_checkpoint_is_a_clear_error(tmp_path):
    result = cli("evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"resnet-search: error: no checkpoint at {tmp_path / 'nope.pt'}"
