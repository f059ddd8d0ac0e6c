"""Training speed on a user's image folder: the same as on a built-in dataset of that size,
and what each image size costs.

A folder dataset is decoded once into a uint8 cache and then trains on the same on-device
loader as the built-in datasets, so its images/s should equal theirs at the same image
size (the target: within 10%). This measures WRN-16-2 (batch 128, the training defaults:
bf16 autocast where fast, channels-last) for whole epochs on

- a folder of PNGs (RGB, 10 classes) cached at 32x32, against `synthetic` 3x32x32 images
  of the same count (a built-in dataset: uint8 tensors made in memory);
- the same folder cached at 64x64 and 96x96: what a larger image size costs per image.

    .venv/bin/python benchmarks/folder_training.py            # 3 repetitions
    .venv/bin/python benchmarks/folder_training.py --smoke-test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine, spread, write_result
from PIL import Image

from resnet_core import DataConfig, ModelConfig, TrainConfig, TrainingRun, load_data

RESULT = Path(__file__).parent / "results" / "folder_training.json"
MODEL = ModelConfig(family="wrn", depth=16, width=2)


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


def images_per_second(data_config: DataConfig, epochs: int) -> float:
    """Training images per second over `epochs` whole epochs, after one untimed epoch."""
    run = TrainingRun(MODEL, TrainConfig(epochs=epochs + 1, batch_size=128), load_data(data_config),
                      "cpu")
    run.train_epoch()  # warm-up: allocator, kernels' first calls
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        run.train_epoch()
        seen += run.train_loader.num_images
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--smoke-test", action="store_true", help="tiny and once: does it run")
    args = parser.parse_args()
    if args.smoke_test:
        args.images, args.repetitions = 320, 1
    result = {"machine": machine(), "model": "wrn-16-2", "batch_size": 128,
              "images": args.images, "epochs": args.epochs, "sides": {}}
    with tempfile.TemporaryDirectory(prefix="folder-training-") as scratch:
        folder = Path(scratch) / "images"
        write_pngs(folder, args.images)
        sides = {
            "synthetic 32x32 (built in)": DataConfig(
                "synthetic", synthetic_shape=(3, 32, 32), synthetic_size=args.images),
            **{f"folder {size}x{size}": DataConfig("folder", path=str(folder), image_size=size,
                                                   channels=3, cache_dir=f"{scratch}/cache{size}")
               for size in (32, 64, 96)},
        }
        for config in sides.values():
            load_data(config)  # caches built before anything is timed
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repetitions):  # interleaved: load drifts hit every side alike
            for name, config in sides.items():
                rates[name].append(images_per_second(config, args.epochs))
                print(f"{name}: {rates[name][-1]:.0f} images/s", flush=True)
    result["sides"] = {name: spread(values) | {"runs": values} for name, values in rates.items()}
    base = result["sides"]["synthetic 32x32 (built in)"]["mean"]
    result["folder_32_vs_builtin"] = result["sides"]["folder 32x32"]["mean"] / base
    write_result(result, RESULT)


if __name__ == "__main__":
    main()
