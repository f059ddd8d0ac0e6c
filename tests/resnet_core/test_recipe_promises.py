"""README promises about the training recipe: each option, set, changes what training does.

Every test trains a tiny network for one short epoch twice, with and without the option, from
the same seed, so any difference comes from the option alone.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet_core.data import DataConfig, load_data
from resnet_core.models import parse_model_name
from resnet_core.run_configs import configs_from_options
from resnet_core.train import TrainConfig, TrainingRun, fit


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


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_training_loss_is_the_cross_entropy_with_that_label_smoothing(digits, smoothing):
    # With an lr so small that no weight moves, a second run from the same seed replays the
    # batches the first trained on with the same weights: its loss, computed here, is what the
    # first must report.
    config = TrainConfig(epochs=1, batch_size=64, amp=False, seed=0, lr=1e-30,
                         label_smoothing=smoothing)
    (metrics,) = fit(TrainingRun(parse_model_name("resnet-8"), config, digits, "cpu"))
    replay = TrainingRun(parse_model_name("resnet-8"), config, digits, "cpu")
    replay.model.train()
    total, seen = 0.0, 0
    with torch.no_grad():
        for images, labels in replay.train_loader:
            logits = replay.model(images)
            total += F.cross_entropy(logits, labels, label_smoothing=smoothing,
                                     reduction="sum").item()
            seen += len(labels)
    assert metrics["train_loss"] == pytest.approx(total / seen, rel=1e-5)


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


def test_options_of_a_run_train_like_the_configs_they_name(digits):
    recipe = {"weight_decay": 1.0, "lr": 0.2, "epochs": 1, "batch_size": 64, "amp": False,
              "seed": 0}
    model, exempt, data = configs_from_options("resnet-8", {**recipe, "exempt_bn_and_bias": True,
                                                            "dropout": 0.1, "subset": 64})
    assert (model.name, model.dropout, data.subset) == ("resnet-8", 0.1, 64)
    _, default = configs_from_options("resnet-8", recipe)[:2]
    _, exempt_weights = _train(digits, **_as_kwargs(exempt))
    _, default_weights = _train(digits, **_as_kwargs(default))
    _, direct_weights = _train(digits, **recipe, exempt_bn_and_bias=True)
    assert _same_weights(exempt_weights, direct_weights)
    assert not _same_weights(exempt_weights, default_weights)


def _as_kwargs(config: TrainConfig) -> dict:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config)}


def test_no_augment_trains_on_the_images_as_they_are(digits):
    data_config = configs_from_options("resnet-8", {"augment": False, "subset": 128})[2]
    plain = load_data(data_config)
    assert (plain.crop_padding, plain.flip) == (0, False)
    # The batches training draws: the normalised images themselves, or shifted copies of them
    # (digits: crops of +-1 pixel, one in nine at no shift).
    for data, as_they_are in ((plain, True), (digits, False)):
        run = TrainingRun(parse_model_name("resnet-8"), TrainConfig(batch_size=64, seed=0),
                          data, "cpu")
        loader = run.train_loader
        loader.index_log = []
        batches = torch.cat([images for images, _ in loader])
        index = torch.cat(loader.index_log)
        raw = (data.train.images[index].float() - loader.mean) * loader.inv_std
        unchanged = torch.isclose(batches, raw).flatten(1).all(1).float().mean().item()
        assert unchanged == 1.0 if as_they_are else unchanged < 0.5, (as_they_are, unchanged)


def test_amp_options_reach_the_run_and_the_network_computes_in_bf16(digits):
    for on in (True, False):
        train = configs_from_options("resnet-8", {"amp": on})[1]
        assert TrainingRun(parse_model_name("resnet-8"), train, digits, "cpu").amp is on, on
    # What the network computes in: the first convolution's outputs during training.
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        config = TrainConfig(epochs=1, batch_size=64, seed=0, amp=amp)
        run = TrainingRun(parse_model_name("resnet-8"), config, digits, "cpu")
        seen: set[torch.dtype] = set()
        conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda _module, _input, output, seen=seen: seen.add(output.dtype))
        fit(run)
        assert seen == {dtype}, amp


def test_val_size_and_subset_set_the_split_sizes_training_sees():
    data = load_data(DataConfig("digits", val_size=300, subset=128))
    run = TrainingRun(parse_model_name("resnet-8"), TrainConfig(epochs=1, batch_size=64, amp=False),
                      data, "cpu")
    assert (run.train_loader.num_images, run.val_loader.num_images) == (128, 300)
    assert len(run.train_loader) == 2  # 128 images in batches of 64: two steps an epoch
