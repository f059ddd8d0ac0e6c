"""Training speed on a user's image folder: the same as on a built-in dataset of that size,
and what each image size costs.

A folder dataset is decoded once into a uint8 cache and then trains on the same on-device
loader as the built-in datasets, so its images/s should equal theirs at the same image
size (the target: within 10%). This measures WRN-16-2 (batch 128, the training defaults:
bf16 autocast where fast, channels-last) on

- a folder of 3,072 PNGs (RGB, 10 classes) cached at 32x32, against `synthetic` 3x32x32
  images (a built-in dataset: uint8 tensors made in memory); both splits are 2,304
  training, 256 validation and 512 test images, so both epochs take the same 18 steps;
- with --sizes 32 64 96: the same folder cached at 64x64 and 96x96 (what a larger image
  size costs per image; each epoch there takes minutes on a 2-core CPU).

One network per side is built once and warmed up one epoch; then the sides train one
epoch each in turn (ABBA order within each pair of repetitions, so a drift in the
machine's load falls on both alike). The figure is the training part of the epoch
(validation excluded): images/s and milliseconds per step.

    .venv/bin/python benchmarks/folder_training.py                 # 8 repetitions at 32x32
    .venv/bin/python benchmarks/folder_training.py --sizes 32 64 96 --repetitions 3
    .venv/bin/python benchmarks/folder_training.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from machine import machine, spread, write_result
from PIL import Image

from resnet_core import DataConfig, ModelConfig, TrainConfig, TrainingRun, load_data

RESULT = Path(__file__).parent / "results" / "folder_training.json"
MODEL = ModelConfig(family="wrn", depth=16, width=2)
BUILTIN = "synthetic 32x32 (built in)"


def write_pngs(folder: Path, count: int, size: int = 128) -> None:
    """`count` RGB PNGs of size x size in 10 class folders (gradients plus noise)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for i in range(count):
        label = i % 10
        image = (ramp[None, :, None] * (label + 1) / 10 + rng.normal(0, 20, (size, size, 3)))
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"c{label}" /
                                                                        f"{i}.png")


def sides(folder: Path, scratch: str, train: int, sizes: list[int]) -> dict[str, DataConfig]:
    """The built-in dataset and the folder at each size, with the same split sizes."""
    val, test = train // 9, 2 * train // 9  # synthetic: val = 10% of its training images
    return {BUILTIN: DataConfig("synthetic", synthetic_shape=(3, 32, 32),
                                synthetic_size=train + val),
            **{f"folder {size}x{size}": DataConfig(
                "folder", path=str(folder), image_size=size, channels=3, val_size=val,
                test_size=test, cache_dir=f"{scratch}/cache{size}") for size in sizes}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=2304, help="per split: 18 steps")
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (unset: torch's default, one per core); 1 holds up "
                             "on a machine others load: spinning OpenMP threads do not")
    parser.add_argument("--smoke-test", action="store_true", help="tiny and once: does it run")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.smoke_test:
        args.train_images, args.repetitions = 288, 1
    train = args.train_images
    import torch

    result = {"machine": machine(), "model": "wrn-16-2", "batch_size": 128,
              "repetitions": args.repetitions, "train_images": train,
              "torch_threads": torch.get_num_threads(), "sides": {}}
    with tempfile.TemporaryDirectory(prefix="folder-training-") as scratch:
        folder = Path(scratch) / "images"
        write_pngs(folder, train + train // 9 + 2 * train // 9)
        configs = sides(folder, scratch, train, args.sizes)
        runs = {name: TrainingRun(MODEL, TrainConfig(epochs=args.repetitions + 1, batch_size=128),
                                  load_data(config), "cpu") for name, config in configs.items()}
        for name, run in runs.items():
            assert run.train_loader.num_images == train // 128 * 128, (name, run.train_loader)
            run.train_epoch()  # warm-up: allocator, kernels' first calls
        rates: dict[str, list[float]] = {name: [] for name in runs}
        steps: dict[str, list[float]] = {name: [] for name in runs}
        loads = []
        for repetition in range(args.repetitions):
            loads.append(os.getloadavg()[0])
            order = list(runs) if repetition % 2 == 0 else list(reversed(runs))
            for name in order:
                seconds = runs[name].train_epoch()["train_seconds"]
                rates[name].append(runs[name].train_loader.num_images / seconds)
                steps[name].append(1000 * seconds / len(runs[name].train_loader))
            print(f"repetition {repetition + 1} (load {loads[-1]:.1f}): " + ", ".join(
                f"{name} {rates[name][-1]:.0f} images/s" for name in runs), flush=True)
    result["loadavg_per_repetition"] = loads
    result["sides"] = {name: {"images_per_s": spread(rates[name]) | {"runs": rates[name]},
                              "ms_per_step": spread(steps[name])} for name in runs}
    if "folder 32x32" in rates:
        ratios = [f / b for f, b in zip(rates["folder 32x32"], rates[BUILTIN], strict=True)]
        result["folder_32_over_builtin"] = spread(ratios) | {"runs": ratios}
        print(f"folder 32x32 / built in: {result['folder_32_over_builtin']['mean']:.3f} "
              f"(std {result['folder_32_over_builtin']['std']:.3f})")
    write_result(result, RESULT)


if __name__ == "__main__":
    main()
