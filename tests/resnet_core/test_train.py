"""The training loop: quality, divergence, exact resume, safe checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from common import ROOT

from resnet_core.checkpoint import (
    CheckpointError,
    data_config_from_dict,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from resnet_core.data import DataConfig, load_data
from resnet_core.models import parse_model_name
from resnet_core.train import DivergedError, TrainConfig, TrainingRun, fit


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits"))


@pytest.mark.slow
def test_wrn_16_2_reaches_97_percent_on_digits_with_the_defaults(digits):
    run = TrainingRun(parse_model_name("wrn-16-2"), TrainConfig(epochs=15), digits, "cpu")
    history = fit(run)
    assert len(history) == 15
    _, test_accuracy = run.test()
    assert test_accuracy >= 0.97, test_accuracy
    # The README: bf16 by default on CPUs that run it fast (AVX-512 BF16 or AMX), fp32 elsewhere.
    assert run.amp == _cpu_flags_say_bf16_is_fast(), "the amp default does not follow the CPU flags"
    keys = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
            "epoch_seconds", "images_per_second"}
    assert keys <= set(history[-1])
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def _cpu_flags_say_bf16_is_fast() -> bool:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), "")
    return "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()


def test_callback_gets_every_epoch(digits):
    seen = []
    run = TrainingRun(parse_model_name("wrn-10-1"), TrainConfig(epochs=2), digits, "cpu")
    fit(run, on_epoch=lambda run, metrics: seen.append((run.epoch, metrics)))
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert [m["epoch"] for _, m in seen] == [1, 2]
    # The callback sees the run's own record, and its val accuracy is the model's, scored again.
    assert [metrics for _, metrics in seen] == run.history
    assert seen[-1][1]["val_accuracy"] == run.evaluate(run.val_loader)[1]
    assert seen[-1][1]["lr"] < 0.1


def test_a_callback_that_returns_true_stops_training(digits):
    run = TrainingRun(parse_model_name("resnet-8"), TrainConfig(epochs=3), digits, "cpu")
    history = fit(run, on_epoch=lambda run, metrics: metrics["epoch"] == 1)
    assert [m["epoch"] for m in history] == [1] and run.epoch == 1 and not run.finished


def test_divergence_raises_a_recognisable_error(digits):
    config = TrainConfig(epochs=3, lr=1e30, optimizer="sgd", weight_decay=0, amp=False)
    run = TrainingRun(parse_model_name("resnet-8"), config, digits, "cpu")
    with pytest.raises(DivergedError, match="diverged: non-finite training loss") as error:
        fit(run)
    assert error.value.epoch == 1
    assert not run.history  # no NaN metrics were reported


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer='sgdm' is not one of"):
        TrainConfig(optimizer="sgdm")
    with pytest.raises(ValueError, match="warmup_epochs=20 must be in"):
        TrainConfig(epochs=10, warmup_epochs=20)
    with pytest.raises(ValueError, match="epochs=0 must be an integer >= 1"):
        TrainConfig(epochs=0)


RESUME_SCRIPT = """
import sys, torch
from resnet_core.checkpoint import load_checkpoint, save_checkpoint
from resnet_core.data import DataConfig, load_data
from resnet_core.config import ModelConfig
from resnet_core.train import TrainConfig, TrainingRun, fit
state = load_checkpoint(sys.argv[1])
data = load_data(DataConfig("digits", subset=400))
config = TrainConfig.from_dict(state["train_config"])
run = TrainingRun(ModelConfig.from_dict(state["model_config"]), config, data, "cpu")
run.load_state_dict(state)
fit(run)
save_checkpoint(run.state_dict(), sys.argv[2])
"""


@pytest.mark.slow
def test_resume_in_a_new_process_is_exact(tmp_path):
    data = load_data(DataConfig("digits", subset=400))
    config = TrainConfig(epochs=4, deterministic=True, seed=5)
    model_config = parse_model_name("wrn-10-2", dropout=0.2)

    straight = TrainingRun(model_config, config, data, "cpu")
    fit(straight)

    first_half = TrainingRun(model_config, config, data, "cpu")
    first_half.train_epoch()
    first_half.train_epoch()
    save_checkpoint(first_half.state_dict(), tmp_path / "half.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "half.pt"),
                    str(tmp_path / "resumed.pt")], check=True, env=env, cwd=tmp_path)
    resumed = load_checkpoint(tmp_path / "resumed.pt")

    assert resumed["epoch"] == 4
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed["model"][key]), key
    def without_timing(history):
        return [{k: v for k, v in m.items() if not k.endswith(("_seconds", "images_per_second"))}
                for m in history]

    assert without_timing(straight.history) == without_timing(resumed["history"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoints_load_without_running_code(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {}, "payload": _Exploit()}, evil)
    with pytest.raises(CheckpointError, match="is not a resnet-search checkpoint"):
        load_checkpoint(evil)
    assert not (Path.cwd() / "pwned").exists()


def test_a_run_built_from_configs_carries_its_data_config_into_checkpoints(tmp_path):
    data_config = DataConfig("digits", subset=200, split_seed=3)
    run = TrainingRun.from_configs(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                                   data_config, "cpu")
    fit(run)
    path = save_checkpoint(run.state_dict(), tmp_path / "checkpoint.pt")
    state = load_checkpoint(path)
    assert data_config_from_dict(state["data_config"]) == data_config
    # A run restored from the checkpoint alone knows its data too.
    restored = TrainingRun(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                           load_data(data_config), "cpu")
    restored.load_state_dict(state)
    assert restored.data_config == data_config


def test_checkpoint_rebuilds_the_model_alone(tmp_path, digits):
    run = TrainingRun(parse_model_name("resnet-8"), TrainConfig(epochs=1), digits, "cpu")
    fit(run)
    path = save_checkpoint(run.state_dict(), tmp_path / "ck" / "checkpoint.pt")
    model, state = model_from_checkpoint(path.parent)
    assert state["epoch"] == 1 and not model.training
    x = torch.randn(3, 1, 8, 8)
    run.model.eval()
    assert torch.allclose(model(x), run.model(x), atol=1e-5)  # run.model is channels-last
    assert not list(tmp_path.glob("ck/.*.tmp"))  # atomic write left no temp file
