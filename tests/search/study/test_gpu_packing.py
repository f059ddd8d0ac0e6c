"""`gpus_per_trial = "auto"`: the memory estimate against a measured peak, and the packing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resnet_core.models import parse_model_name
from search.study.gpu_packing import (
    MAX_TRIALS_PER_GPU,
    AutoGpuResources,
    estimate_training_memory,
    gpu_fraction,
)

GiB = 2**30

MEASURE_PEAK = """
import json, sys, torch
torch.set_num_threads(1)
from resnet_core.models import build_model, parse_model_name
from search.study.gpu_packing import estimate_training_memory
name, batch = sys.argv[1], int(sys.argv[2])
config = parse_model_name(name)
model = build_model(config)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
# Reset the high-water mark (VmHWM) to the current RSS: imports may have peaked higher.
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status_kib("VmRSS")
for _ in range(2):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
estimate = estimate_training_memory(config, batch, (3, 32, 32), optimizer="sgd", amp=False)
print(json.dumps({"measured": status_kib("VmHWM") - before, "estimate": estimate.training}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("model", "batch"), [("wrn-16-2", 128), ("resnet-20", 256)])
def test_estimate_matches_the_measured_peak_of_a_training_step(model, batch):
    # On the CPU (fp32) the peak resident memory of two SGD steps, in a fresh process,
    # is what the GPU estimate predicts for gradients, optimizer state and activations.
    # Linux only: the peak is read from /proc (VmHWM, reset before the steps).
    result = subprocess.run([sys.executable, "-c", MEASURE_PEAK, model, str(batch)],
                            capture_output=True, text=True, check=True, timeout=300)
    figures = json.loads(result.stdout)
    ratio = figures["estimate"] / figures["measured"]
    print(f"{model} batch {batch}: estimate/measured = {ratio:.2f}")
    assert 1 / 1.3 < ratio < 1.3, f"estimate off by more than the README's 30%: {figures}"


def test_bf16_halves_activation_memory_and_optimizers_add_state():
    config = parse_model_name("wrn-16-4")
    fp32 = estimate_training_memory(config, 128, (3, 32, 32), amp=False)
    bf16 = estimate_training_memory(config, 128, (3, 32, 32), amp=True)
    assert bf16.activations == pytest.approx(fp32.activations / 2, rel=0.01)
    adam = estimate_training_memory(config, 128, (3, 32, 32), optimizer="adam")
    assert adam.optimizer == 2 * bf16.optimizer
    double = estimate_training_memory(config, 256, (3, 32, 32), amp=True)
    assert double.activations == pytest.approx(2 * bf16.activations, rel=0.01)


def test_packing_fits_small_networks_several_to_a_gpu():
    assert gpu_fraction(1 * GiB, 80 * GiB) == 1 / MAX_TRIALS_PER_GPU
    assert gpu_fraction(5 * GiB, 16 * GiB) == 1 / 2
    assert gpu_fraction(30 * GiB, 16 * GiB) == 1.0
    resources = AutoGpuResources(cpus=2, dataset="cifar10", gpu_bytes=16 * GiB)
    small = {"model": {"family": "resnet", "depth": 20}, "train": {"batch_size": 128,
                                                                    "optimizer": "sgd"}}
    large = {"model": {"family": "wrn", "depth": 28, "width": 10},
             "train": {"batch_size": 512, "optimizer": "adam", "amp": False}}
    assert resources(small) == {"cpu": 2, "gpu": 1 / 8}
    assert resources(large)["gpu"] > resources(small)["gpu"]
