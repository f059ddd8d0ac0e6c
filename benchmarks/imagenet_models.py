"""ImageNet ResNet-18/50: our networks against torchvision's, one training step at a time.

Images per second of a training step (forward, backward, SGD step) in the loop users write
(fp32, NCHW, the model in train mode), for our `imagenet-resnet-18/50` and torchvision's
`resnet18/50`, which have the same modules and weights: the difference is the code, not
the network. A third row times ours as `TrainingRun` trains it on this machine
(channels-last, bf16 autocast where bf16 is fast). Each cell: a warm-up step, then `--reps`
timings of `--steps` steps, interleaved between the three; mean and spread recorded with the
machine (benchmarks/machine.py).

    .venv/bin/python benchmarks/imagenet_models.py [--sizes 64 128 224] [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, spread, write_result  # noqa: E402

from resnet_core import bf16_is_fast, build_model  # noqa: E402

# Batch per image size: small enough that a 2-core CPU times 224 px in minutes.
BATCH = {64: 16, 128: 8, 224: 4}


def training_step(model: torch.nn.Module, size: int, batch: int, channels_last: bool = False,
                  amp: bool = False):
    """One SGD step of the model on a fixed random batch, as a function (warmed up once)."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size).to(memory_format=memory)
    labels = torch.randint(0, 1000, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, kernel choice
    return step


def interleaved_rates(steps_of: dict, batch: int, steps: int, reps: int) -> dict:
    """Images per second of each cell, its repetitions interleaved with the others' so that
    a load that drifts (a shared machine) falls on every cell alike."""
    rates: dict[str, list[float]] = {name: [] for name in steps_of}
    for _ in range(reps):
        for name, step in steps_of.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(batch * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 50])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "imagenet_models.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"machine": machine(), "threads": torch.get_num_threads(), "rows": []}
    amp = bf16_is_fast(torch.device("cpu"))
    for depth in args.depths:
        for size in args.sizes:
            batch = BATCH.get(size, 8)
            options = {"torchvision": {}, "ours": {},
                       "ours, as trained here": {"channels_last": True, "amp": amp}}
            steps_of = {name: training_step(
                getattr(torchvision.models, f"resnet{depth}")() if name == "torchvision"
                else build_model(f"imagenet-resnet-{depth}", num_classes=1000),
                size, batch, **chosen) for name, chosen in options.items()}
            for name, rates in interleaved_rates(steps_of, batch, args.steps, args.reps).items():
                rate = spread(rates)
                result["rows"].append({"network": f"resnet-{depth}", "size": size,
                                       "batch": batch, "code": name, **options[name],
                                       "images_per_second": rate, "repetitions": rates})
                print(f"resnet-{depth} {size:>3} px batch {batch:>2} {name:<22} "
                      f"{rate['mean']:7.1f} img/s (min {rate['min']:.1f}, max {rate['max']:.1f})",
                      flush=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
