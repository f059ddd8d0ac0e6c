"""A trial that was given a GPU but cannot use it fails with one line: on
a node whose NVIDIA driver is too old for the CUDA 13 build of torch, torch sees no
GPU, and a trainable that did not check would train on the CPU for hours without a word."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from resnet_core.hardware import GpuUnusableError, min_driver_branch, trial_device


def test_without_assigned_gpus_the_device_follows_torch():
    assert trial_device([], cuda_available=False) == "cpu"
    assert trial_device([], cuda_available=True) == "cuda"


def test_assigned_gpus_that_torch_can_use_train_on_cuda():
    assert trial_device([0], cuda_available=True, device_count=1) == "cuda"
    assert trial_device(["0", "1"], cuda_available=True, device_count=2) == "cuda"


@pytest.mark.parametrize("available, count", [(False, 0), (True, 1)])
def test_assigned_gpus_that_torch_cannot_use_fail_with_one_line(available, count):
    with pytest.raises(GpuUnusableError) as caught:
        trial_device([0, 1], cuda_available=available, device_count=count)
    message = str(caught.value)
    assert "\n" not in message
    assert "GPU(s) 0,1" in message and torch.__version__ in message
    if torch.version.cuda:
        assert f"R{min_driver_branch()}" in message


def test_minimum_driver_of_the_cuda_builds():
    assert min_driver_branch("13.0") == 580
    assert min_driver_branch("12.8") == 525
    assert min_driver_branch("") is None


def test_a_trial_whose_gpu_is_hidden_from_torch_refuses_to_start():
    """The real path, in a fresh process: Ray assigned GPU 0, but torch sees no device
    (here: CUDA_VISIBLE_DEVICES hides it; on a node: no or too old a driver)."""
    code = (
        "from resnet_core.hardware import trial_device, GpuUnusableError\n"
        "try:\n"
        "    print(trial_device([0]))\n"
        "except GpuUnusableError as e:\n"
        "    print('ERROR', e)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ERROR this trial was given GPU(s) 0"), out
