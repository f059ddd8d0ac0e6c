"""A folder of JPEGs read once: resnet_core's decode cache against torchvision's ImageFolder.

Two folders (10 classes; smooth gradients with noise, like photos more than like flat
colours): the target's, N small JPEGs of 128x96, and camera-sized ones (M JPEGs of 640x480,
which the cache decodes at 1/8 scale, the reference in full). For each, repetitions
interleaved:

- cache build: `load_data(DataConfig("folder", ..., image_size=32))` on a folder without a
  cache (each image decoded, resized and centre-cropped once, in worker processes, into
  one .npy);
- cache load: the same call again (the cache is fresh: nothing is decoded);
- reference: torchvision `ImageFolder` with Resize(32) + CenterCrop(32) + PILToTensor and a
  `DataLoader` (batch 256, 2 workers) reading every file once, as a hand-written loop does
  each epoch.

Wall seconds and CPU seconds (this process and its children: the decode workers, the
DataLoader's workers) are both recorded: on a shared machine the CPU seconds move less.

    .venv/bin/python benchmarks/folder_cache.py [--images 10000] [--photos 2000] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def write_jpegs(folder: Path, count: int, size: tuple[int, int] = (128, 96), seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
    for i in range(count):
        colour = rng.uniform(40, 215, 3)
        pixels = ramp * colour + rng.normal(0, 12, (height, width, 3)) + 20
        target = folder / f"class{i % CLASSES}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target / f"{i}.jpg",
                                                                        quality=90)


class Clock:
    """Wall seconds and CPU seconds of this process and its finished children."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *_) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu

    @staticmethod
    def _cpu() -> float:
        own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                              resource.RUSAGE_CHILDREN))
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_cache(folder: Path) -> tuple[Clock, float]:
    """(the build from scratch, seconds to load it fresh)."""
    from resnet_core.data import DataConfig, load_data

    shutil.rmtree(folder / ".resnet-search-cache", ignore_errors=True)
    config = DataConfig("folder", path=str(folder), image_size=IMAGE_SIZE, channels=3)
    with Clock() as built:
        load_data(config)
    with Clock() as loaded:
        load_data(config)
    shutil.rmtree(folder / ".resnet-search-cache", ignore_errors=True)
    return built, loaded.wall


def time_reference(folder: Path, workers: int) -> Clock:
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(IMAGE_SIZE), transforms.CenterCrop(IMAGE_SIZE),
                                    transforms.PILToTensor()])
    with Clock() as clock:
        # ImageFolder skips hidden folders, but not a cache beside the classes: keep none there.
        dataset = datasets.ImageFolder(str(folder), transform=transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers)
        seen = sum(len(labels) for _, labels in loader)
        del loader  # its workers exit and are reaped: their CPU time is counted
    assert seen == len(dataset)
    return clock


def measure(folder: Path, repetitions: int, workers: int) -> dict:
    """Reference, build and load, interleaved; the load average before and after each
    repetition (other work on the machine moves the wall times, less the CPU seconds)."""
    runs: dict[str, list[float]] = {key: [] for key in (
        "reference_s", "reference_cpu_s", "build_s", "build_cpu_s", "load_s", "loadavg",
        "loadavg_end")}
    for repetition in range(repetitions):
        runs["loadavg"].append(os.getloadavg()[0])
        reference = time_reference(folder, workers)
        built, loaded = time_cache(folder)
        for key, value in (("reference_s", reference.wall), ("reference_cpu_s", reference.cpu),
                           ("build_s", built.wall), ("build_cpu_s", built.cpu),
                           ("load_s", loaded), ("loadavg_end", os.getloadavg()[0])):
            runs[key].append(value)
        print(f"  repetition {repetition + 1} (load {runs['loadavg'][-1]:.1f}-"
              f"{runs['loadavg_end'][-1]:.1f}): reference "
              f"{reference.wall:.2f} s ({reference.cpu:.2f} CPU s), cache build {built.wall:.2f} s "
              f"({built.cpu:.2f} CPU s), cache load {loaded:.3f} s, ratio "
              f"{reference.wall / built.wall:.2f}x wall, {reference.cpu / built.cpu:.2f}x CPU",
              flush=True)
    ratios = [r / b for r, b in zip(runs["reference_s"], runs["build_s"], strict=True)]
    cpu_ratios = [r / b for r, b in zip(runs["reference_cpu_s"], runs["build_cpu_s"], strict=True)]
    return {"seconds": {"reference_one_pass": spread(runs["reference_s"]),
                        "cache_build": spread(runs["build_s"]), "cache_load": spread(runs["load_s"])},
            "cpu_seconds": {"reference_one_pass": spread(runs["reference_cpu_s"]),
                            "cache_build": spread(runs["build_cpu_s"])},
            "reference_over_build": spread(ratios), "reference_over_build_cpu": spread(cpu_ratios),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="128x96 JPEGs (the target's)")
    parser.add_argument("--photos", type=int, default=2_000, help="640x480 JPEGs (0: none)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/folder_cache.json")
    args = parser.parse_args()
    import PIL
    import torchvision

    info = machine()
    info["versions"].update({"pillow": PIL.__version__, "torchvision": torchvision.__version__})
    result = {"machine": info, "image_size": IMAGE_SIZE, "reference_workers": args.workers,
              "repetitions": args.repetitions, "folders": {}}
    folders = {"128x96": (args.images, (128, 96)), "640x480": (args.photos, (640, 480))}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (count, size) in folders.items():
            if not count:
                continue
            folder = Path(tmp) / name
            start = time.perf_counter()
            write_jpegs(folder, count, size)
            print(f"{name}: wrote {count} JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
            result["folders"][name] = {"images": count, "image": f"{name} RGB JPEG, quality 90",
                                       **measure(folder, args.repetitions, args.workers)}
            shutil.rmtree(folder)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
