"""README promises about the training recipe: each option, set, changes what training does.

Every test trains a tiny network for one short epoch twice, with and without the option, from
the same seed, so any difference comes from the option alone.
"""

from __future__ import annotations

import pytest
import torch

from resnet_core.data import DataConfig, load_data
from resnet_core.models import parse_model_name
from resnet_core.train import TrainConfig, TrainingRun, fit
from search.cli import _train_configs, build_parser


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig("digits", subset=128))


def _train(data, **recipe) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One epoch of resnet-8 from seed 0: (the epoch's metrics, the trained weights)."""
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, "amp": False, "seed": 0, **recipe})
    run = TrainingRun(parse_model_name("resnet-8"), config, data, "cpu")
    (metrics,) = fit(run)
    return metrics, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_baseline_is_reproducible_so_a_difference_is_the_options(digits):
    (first, first_weights), (second, second_weights) = _train(digits), _train(digits)
    assert first["train_loss"] == second["train_loss"]
    assert _same_weights(first_weights, second_weights)


def test_label_smoothing_changes_the_training_loss(digits):
    plain, _ = _train(digits)
    smoothed, _ = _train(digits, label_smoothing=0.2)
    assert smoothed["train_loss"] != plain["train_loss"]


def test_grad_clip_limits_how_far_the_weights_move(digits):
    start = TrainingRun(parse_model_name("resnet-8"), TrainConfig(seed=0, amp=False), digits, "cpu")
    initial = {k: v.detach().clone() for k, v in start.model.state_dict().items()}

    def moved(weights):
        return sum((weights[k] - initial[k]).norm() for k in initial
                   if initial[k].is_floating_point() and "running" not in k)

    # Without weight decay the weights move by the (clipped) gradient steps alone.
    _, free = _train(digits, weight_decay=0.0)
    _, clipped = _train(digits, weight_decay=0.0, grad_clip=1e-3)
    assert moved(clipped) < 0.1 * moved(free)


def test_exempt_bn_and_bias_keeps_weight_decay_off_bn_and_biases(digits):
    recipe = {"weight_decay": 1.0, "lr": 0.2}
    _, decayed = _train(digits, **recipe)
    _, exempt = _train(digits, exempt_bn_and_bias=True, **recipe)

    def one_d_norm(weights):
        return sum(v.float().norm() for k, v in weights.items()
                   if v.ndim == 1 and v.is_floating_point() and "running" not in k)

    # A decay of 1.0 shrinks BN scales every step unless they are exempt.
    assert one_d_norm(exempt) > 1.05 * one_d_norm(decayed)


def test_the_old_no_decay_bn_bias_flag_trains_like_exempt_bn_and_bias(digits):
    _, via_alias, _ = _train_configs(build_parser().parse_args(
        ["train", "--no-decay-bn-bias", "--weight-decay", "1.0", "--lr", "0.2"]))
    _, via_flag, _ = _train_configs(build_parser().parse_args(
        ["train", "--exempt-bn-and-bias", "--weight-decay", "1.0", "--lr", "0.2"]))
    _, default, _ = _train_configs(build_parser().parse_args(
        ["train", "--weight-decay", "1.0", "--lr", "0.2"]))
    recipe = {"epochs": 1, "batch_size": 64, "amp": False, "seed": 0}
    _, alias_weights = _train(digits, **{**_as_kwargs(via_alias), **recipe})
    _, flag_weights = _train(digits, **{**_as_kwargs(via_flag), **recipe})
    _, default_weights = _train(digits, **{**_as_kwargs(default), **recipe})
    assert _same_weights(alias_weights, flag_weights)
    assert not _same_weights(alias_weights, default_weights)


def _as_kwargs(config: TrainConfig) -> dict:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config)}


def test_no_augment_trains_on_the_images_as_they_are(digits):
    flags = build_parser().parse_args(["train", "--no-augment", "--subset", "128"])
    data_config = _train_configs(flags)[2]
    plain = load_data(data_config)
    assert (plain.crop_padding, plain.flip) == (0, False)
    augmented, _ = _train(digits)
    unaugmented, _ = _train(plain)
    assert augmented["train_loss"] != unaugmented["train_loss"]


def test_amp_flags_reach_the_run_and_bf16_changes_the_numbers(digits):
    for flag, on in (("--amp", True), ("--no-amp", False)):
        train = _train_configs(build_parser().parse_args(["train", flag]))[1]
        assert TrainingRun(parse_model_name("resnet-8"), train, digits, "cpu").amp is on, flag
    bf16, _ = _train(digits, amp=True)
    fp32, _ = _train(digits, amp=False)
    assert bf16["train_loss"] != fp32["train_loss"]


def test_val_size_and_subset_set_the_split_sizes_training_sees():
    data = load_data(DataConfig("digits", val_size=300, subset=128))
    run = TrainingRun(parse_model_name("resnet-8"), TrainConfig(epochs=1, batch_size=64, amp=False),
                      data, "cpu")
    assert (run.train_loader.num_images, run.val_loader.num_images) == (128, 300)
    assert len(run.train_loader) == 2  # 128 images in batches of 64: two steps an epoch
