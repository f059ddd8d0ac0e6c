"""Optimizers and schedules by name."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_core.models import build_model
from resnet_core.optim import (
    OPTIMIZERS,
    build_optimizer,
    build_scheduler,
    lr_multiplier,
    parameter_groups,
)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_reduces_the_loss(name):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", in_channels=1, num_classes=3)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    lr = {"sgd": 0.05, "nesterov": 0.05, "rmsprop": 1e-3, "adagrad": 0.05}.get(name, 1e-2)
    optimizer = build_optimizer(name, model, lr)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_optimizer_kinds_and_momentum():
    model = build_model("resnet-8")
    sgd = build_optimizer("sgd", model, 0.1, momentum=0.8)
    nesterov = build_optimizer("nesterov", model, 0.1)
    assert isinstance(sgd, torch.optim.SGD) and not sgd.defaults["nesterov"]
    assert sgd.defaults["momentum"] == 0.8
    assert nesterov.defaults["nesterov"]
    assert isinstance(build_optimizer("adamw", model, 1e-3), torch.optim.AdamW)
    assert isinstance(build_optimizer("adagrad", model, 1e-2), torch.optim.Adagrad)
    with pytest.raises(ValueError, match="optimizer='lamb' is not one of sgd, nesterov"):
        build_optimizer("lamb", model, 0.1)


def test_bn_and_bias_can_be_exempt_from_weight_decay():
    model = build_model("resnet-8")
    groups = parameter_groups(model, 5e-4, exempt_bn_and_bias=True)
    decayed, exempt = groups
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])
    assert exempt["weight_decay"] == 0 and all(p.ndim == 1 for p in exempt["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))
    single = parameter_groups(model, 5e-4, exempt_bn_and_bias=False)
    assert len(single) == 1 and single[0]["weight_decay"] == 5e-4


def test_step_schedule_is_the_wrn_recipe():
    f = lr_multiplier("step", 100)
    assert [f(s) for s in (0, 29, 30, 59, 60, 79, 80, 99)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.04, 0.008, 0.008])


def test_milestones_warmup_and_cosine():
    f = lr_multiplier("milestones", 100, milestones=(0.5,), gamma=0.1)
    assert f(49) == 1 and f(50) == pytest.approx(0.1)
    warm = lr_multiplier("cosine", 100, warmup_steps=10)
    assert [warm(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert warm(10) == pytest.approx(1.0)
    assert warm(55) == pytest.approx(0.5)
    assert warm(100) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="schedule='linear' is not one of"):
        lr_multiplier("linear", 10)


def test_scheduler_steps_per_iteration():
    model = build_model("resnet-8")
    optimizer = build_optimizer("sgd", model, 0.1)
    scheduler = build_scheduler(optimizer, lr_multiplier("cosine", 10))
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs == sorted(lrs, reverse=True)
    assert all(isinstance(v, (int, float, list, dict, type(None)))
               for v in scheduler.state_dict().values())
