"""A folder of JPEGs read once: resnet_core's decode cache against torchvision's ImageFolder.

Generates N JPEGs (10 classes, 128x96 RGB: smooth gradients with noise, like photos
more than like flat colours), then, repetitions interleaved:

- cache build: `load_data(DataConfig("folder", ..., image_size=32))` on a folder without a
  cache (each image decoded, resized and centre-cropped once, in threads, into one .npy);
- cache load: the same call again (the cache is fresh: nothing is decoded);
- reference: torchvision `ImageFolder` with Resize(32) + CenterCrop(32) + PILToTensor and a
  `DataLoader` (batch 256, 2 workers) reading every file once, as a hand-written loop does
  each epoch.

    .venv/bin/python benchmarks/folder_cache.py [--images 10000] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, spread, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
CLASSES = 10


def write_jpegs(folder: Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 128)[None, :, None] * np.linspace(0, 1, 96)[:, None, None]
    for i in range(count):
        colour = rng.uniform(40, 215, 3)
        pixels = ramp * colour + rng.normal(0, 12, (96, 128, 3)) + 20
        target = folder / f"class{i % CLASSES}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target / f"{i}.jpg",
                                                                        quality=90)


def time_cache(folder: Path) -> tuple[float, float]:
    """(seconds to build the cache from scratch, seconds to load it fresh)."""
    from resnet_core.data import DataConfig, load_data

    shutil.rmtree(folder / ".resnet-search-cache", ignore_errors=True)
    config = DataConfig("folder", path=str(folder), image_size=IMAGE_SIZE, channels=3)
    start = time.perf_counter()
    load_data(config)
    built = time.perf_counter() - start
    start = time.perf_counter()
    load_data(config)
    return built, time.perf_counter() - start


def time_reference(folder: Path, workers: int) -> float:
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(IMAGE_SIZE), transforms.CenterCrop(IMAGE_SIZE),
                                    transforms.PILToTensor()])
    start = time.perf_counter()
    # ImageFolder skips hidden folders, but not a cache beside the classes: keep none there.
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers)
    seen = sum(len(labels) for _, labels in loader)
    assert seen == len(dataset)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/folder_cache.json")
    args = parser.parse_args()
    import PIL
    import torchvision

    info = machine()
    info["versions"].update({"pillow": PIL.__version__, "torchvision": torchvision.__version__})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        start = time.perf_counter()
        write_jpegs(folder, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
        builds, loads, references = [], [], []
        for repetition in range(args.repetitions):
            references.append(time_reference(folder, args.workers))
            built, loaded = time_cache(folder)
            builds.append(built)
            loads.append(loaded)
            shutil.rmtree(folder / ".resnet-search-cache", ignore_errors=True)
            print(f"repetition {repetition + 1}: reference {references[-1]:.2f} s, cache build "
                  f"{built:.2f} s, cache load {loaded:.3f} s", flush=True)
    result = {"machine": info, "images": args.images, "image": "128x96 RGB JPEG, quality 90",
              "image_size": IMAGE_SIZE, "reference_workers": args.workers,
              "seconds": {"reference_one_pass": spread(references), "cache_build": spread(builds),
                          "cache_load": spread(loads)},
              "images_per_s": {"reference_one_pass": spread([args.images / t for t in references]),
                               "cache_build": spread([args.images / t for t in builds])}}
    write_result(result, args.json)


if __name__ == "__main__":
    main()
