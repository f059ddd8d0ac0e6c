"""`resnet-search train` and `evaluate` as a user runs them."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import time
from dataclasses import fields

import pytest
from common import cli, free_port, start_cli
from study_helpers import cli_in_process

from resnet_core.checkpoint import model_from_checkpoint
from resnet_core.config import ModelConfig, TrainConfig, field_types, scalar_type
from resnet_core.data import DataConfig
from search.cli.main import build_parser
from search.cli.train import _train_configs


@pytest.mark.slow
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
    model, _ = model_from_checkpoint(out / "checkpoint.pt")
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert metrics["test_accuracy"] > 0.5, metrics["test_accuracy"]  # ten classes: chance is 0.1
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


@pytest.mark.slow
def test_train_resumes_an_interrupted_run(tmp_path):
    """Ctrl-C after the first epoch's checkpoint, then the same command with --resume: the run
    ends as one run of every epoch. A resume that asks for another recipe, network or dataset
    is one line (the saved optimizer and schedule would train on regardless)."""
    out = tmp_path / "run"
    # Six epochs: Ctrl-C comes within 50 ms of the first epoch's checkpoint, the resume trains on.
    args = ("train", "--model", "resnet-8", "--epochs", "6", "--out", str(out), "--quiet")
    first = start_cli(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130, first.stderr.read()
    assert first.stderr.read().strip().splitlines()[-1] == (
        f"resnet-search: interrupted; {out / 'checkpoint.pt'} holds the last finished epoch: "
        f"the same command with --resume continues")
    result = cli(*args, "--resume")
    assert result.returncode == 0, result.stderr
    resumed = re.search(r"resumed from \S+ at epoch (\d+)", result.stderr)
    assert resumed and 1 <= int(resumed.group(1)) < 6, result.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(1, 7))

    recipe = cli(*args, "--lr", "0.01", "--resume")
    assert recipe.returncode == 2, recipe.stderr
    assert recipe.stderr.strip().splitlines() == [
        f"resnet-search: error: --resume: {out / 'checkpoint.pt'} was trained with another recipe "
        f"(lr 0.1 there, 0.01 asked); resume with its flags as first given, or pass another "
        f"--out for a new run"]
    other = cli("train", "--model", "resnet-14", "--epochs", "6", "--out", str(out), "--quiet",
                "--resume")  # another network's checkpoint: one line, not torch's key lists
    assert other.returncode == 2, other.stderr
    assert other.stderr.strip().splitlines() == [
        f"resnet-search: error: --resume: {out / 'checkpoint.pt'} holds resnet-8 (depth 8 there, "
        f"14 asked), not the network asked for; pass its options again or another --out"]
    # Another dataset of the same image shape and classes: the network would load, the saved
    # optimizer and schedule would train on the new data as if nothing changed.
    dataset = cli(*args, "--dataset", "synthetic", "--synthetic-shape", "1", "8", "8", "--resume")
    assert dataset.returncode == 2, dataset.stderr
    assert dataset.stderr.strip().splitlines() == [
        f"resnet-search: error: --resume: {out / 'checkpoint.pt'} was trained with another recipe "
        f"(dataset digits there, synthetic asked, synthetic_shape (3, 32, 32) there, (1, 8, 8) "
        f"asked); resume with its flags as first given, or pass another --out for a new run"]
    fresh = cli("train", "--model", "resnet-8", "--epochs", "1", "--out", str(tmp_path / "new"),
                "--quiet", "--resume")  # nothing to resume: says so, trains from scratch
    assert fresh.returncode == 0 and "no checkpoint in" in fresh.stderr, fresh.stderr


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
        (["--gamma", "0"], "argument --gamma: '0' must be > 0"),
        (["--weight-decay", "-1"], "argument --weight-decay: '-1' must be >= 0"),
        (["--warmup-epochs", "20"], "warmup_epochs=20.0 must be in [0, epochs=15]"),
        (["--synthetic-shape", "3", "32"], "argument --synthetic-shape: expected 3 arguments"),
        # a file where the run's folder would go: refused before any epoch is trained
        (["--out", "{file}"], "argument --out: '{file}': {file} is a file, not a folder"),
        (["--out", "{file}/run"], "argument --out: '{file}/run': {file} is a file, not a folder"),
    ],
)
def test_bad_train_arguments_give_one_line_and_exit_2(args, message, tmp_path):
    """In this process (each refusal comes before anything starts; ~2 s a case as a new
    process): the exit code and stderr main() gives. The test below runs one as a user does."""
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    args = [arg.format(file=file) for arg in args]
    code, _, err = cli_in_process(["train", "--out", str(tmp_path / "x"), *args, "--quiet"])
    assert code == 2  # (a later --out wins)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message.format(file=file) in lines[0]
    assert not (tmp_path / "x").exists()  # nothing started


def test_a_bad_train_argument_in_a_new_process_is_one_line_and_exit_2(tmp_path):
    """What the in-process cases above cannot show: nothing a library prints at start-up
    (warnings, log lines) joins the one line, and the interpreter exits with 2."""
    result = cli("train", "--model", "wrn-15-2", "--out", str(tmp_path / "x"), "--quiet")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "resnet-search: error: depth=15 is invalid for wrn: depth must be 6n+4 with n >= 1 "
        "(e.g. 10, 16, 22)"], result.stderr
    assert not (tmp_path / "x").exists()


def test_evaluate_a_missing_checkpoint_is_a_clear_error(tmp_path):
    result = cli("evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"resnet-search: error: no checkpoint at {tmp_path / 'nope.pt'}"


def train_flags() -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {option: action for action in commands.choices["train"]._actions
            for option in action.option_strings}


def test_every_config_field_is_a_train_flag_named_after_it():
    flags = train_flags()
    model_options = [f for f in fields(ModelConfig) if f.metadata["model_option"]]
    assert {f.name for f in model_options} >= {"dropout", "block", "shortcut", "bn_position"}
    for cls, spec in [*((TrainConfig, f) for f in fields(TrainConfig)),
                      *((DataConfig, f) for f in fields(DataConfig)),
                      *((ModelConfig, f) for f in model_options)]:
        flag = "--" + spec.name.replace("_", "-")
        assert flag in flags, flag
        action = flags[flag]
        assert action.dest == spec.name
        assert action.default is argparse.SUPPRESS  # the dataclass default applies
        assert spec.metadata["help"] and spec.metadata["help"] in action.help.replace("%%", "%")
        if spec.metadata["choices"]:
            assert tuple(action.choices) == spec.metadata["choices"]
        if scalar_type(field_types(cls)[spec.name]) is bool:
            assert "--no-" + flag[2:] in flags, flag


def test_flags_reach_the_configs_and_unset_flags_keep_the_defaults():
    args = build_parser().parse_args([
        "train", "--model", "resnet-20", "--exempt-bn-and-bias", "--no-channels-last",
        "--schedule", "milestones", "--milestones", "0.5", "0.75", "--gamma", "0.1",
        "--synthetic-shape", "1", "8", "8", "--dataset", "synthetic", "--no-augment",
        "--dropout", "0.2", "--no-amp", "--grad-clip", "2", "--deterministic",
        "--synthetic-size", "64"])
    model, train, data = _train_configs(args)
    assert (model.name, model.dropout) == ("resnet-20", 0.2)
    assert train == TrainConfig(exempt_bn_and_bias=True, channels_last=False,
                                schedule="milestones", milestones=(0.5, 0.75), gamma=0.1,
                                amp=False, grad_clip=2.0, deterministic=True)
    assert data == DataConfig(dataset="synthetic", synthetic_shape=(1, 8, 8), augment=False,
                              synthetic_size=64)
    _, defaults, default_data = _train_configs(build_parser().parse_args(["train"]))
    assert (defaults, default_data) == (TrainConfig(), DataConfig())


def test_the_old_flag_name_still_works_but_is_not_advertised():
    args = build_parser().parse_args(["train", "--no-decay-bn-bias"])
    assert _train_configs(args)[1].exempt_bn_and_bias is True
    help_text = cli("train", "--help").stdout
    assert "--exempt-bn-and-bias" in help_text and "--no-decay-bn-bias" not in help_text


def test_evaluate_a_model_uri_on_a_server_that_does_not_answer_is_one_line(tmp_path):
    """Not MLflow's retries (minutes): one line within seconds, as `status` says it."""
    uri = f"http://127.0.0.1:{free_port()}"
    result = cli("evaluate", "--model-uri", "models:/m@champion", "--tracking-uri", uri,
                 cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"resnet-search: error: tracking server {uri} is unreachable (ConnectionError); start it or "
        f"pass --tracking-uri")


def test_recipe_flags_reach_the_configs_the_run_trains_with():
    """The flags the recipe tests (tests/resnet_core/test_recipe_promises.py) prove through the
    configs: `--no-decay-bn-bias` (the old name of `--exempt-bn-and-bias`), `--amp`/`--no-amp`
    and `--no-augment` set the fields they name, and leaving them out keeps the defaults."""
    def configs(*flags: str):
        return _train_configs(build_parser().parse_args(["train", *flags]))

    assert configs("--no-decay-bn-bias")[1].exempt_bn_and_bias is True
    assert configs("--exempt-bn-and-bias")[1].exempt_bn_and_bias is True
    assert configs()[1].exempt_bn_and_bias is False
    assert (configs("--amp")[1].amp, configs("--no-amp")[1].amp) == (True, False)
    assert (configs("--no-augment")[2].augment, configs()[2].augment) == (False, True)


@pytest.mark.slow
def test_models_command_lists_the_registry_as_json():
    from resnet_core import build_model, count_flops, count_parameters, list_models

    result = cli("models", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(list_models())
    assert rows["wrn-28-10"]["parameters"] == count_parameters(build_model("wrn-28-10"))
    assert rows["resnet-20"]["flops"] == count_flops(build_model("resnet-20"))


def test_models_lists_the_imagenet_resnets_with_flops_at_the_image_size():
    from resnet_core import architecture_cost

    code, out, err = cli_in_process(["models", "--json", "--input-size", "64",
                                     "--num-classes", "1000"])
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["imagenet-resnet-50"]["parameters"] == 25_557_032  # torchvision's resnet50
    assert rows["imagenet-resnet-50-2"]["parameters"] == 68_883_240
    assert rows["imagenet-resnet-18"]["flops"] == architecture_cost(
        "imagenet-resnet-18", (64, 64), num_classes=1000)[1] == 148_557_824
    code, out, _ = cli_in_process(["models"])
    assert "imagenet-preact-resnet-50" in out and "imagenet-resnet-D[-K]" in out


def test_evaluate_of_a_torn_checkpoint_is_one_line_exit_2(tmp_path):
    from resnet_core import TrainingRun, parse_model_name, save_checkpoint

    run = TrainingRun.from_configs(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                                   DataConfig("digits"), "cpu")
    whole = save_checkpoint(run.state_dict(), tmp_path / "whole.pt").read_bytes()
    torn = tmp_path / "checkpoint.pt"
    for blob in (whole[: len(whole) // 3], whole[:-10]):
        torn.write_bytes(blob)
        result = cli("evaluate", "--checkpoint", str(torn), cwd=tmp_path, timeout=300)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith(f"resnet-search: error: {torn} is not a readable checkpoint "
                                   f"(truncated or corrupt")
