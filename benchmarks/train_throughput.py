"""Training throughput of resnet_core against the loop a user would write by hand.

Two sides, same model architecture, same batch size, same synthetic CIFAR-shaped
images (3x32x32, 10 classes), same number of images per repetition:

- ``resnet_core``: `TrainingRun` with its fast defaults (bf16 autocast where the
  hardware runs it fast, channels-last, the on-device `DeviceLoader` with batched
  crop/flip/normalise). Each repetition is one `train_epoch()` over exactly
  `steps * batch_size` training images; its `images_per_second` counts only the
  training steps (the validation split is 16 images and is scored outside the
  timed region). One epoch of the same length is run first as warm-up.
- ``reference``: a torchvision `DataLoader` (2 workers, shuffled) over a Dataset that
  holds the same images as uint8 HWC arrays and applies per-image PIL transforms
  (RandomCrop(32, padding=4, padding_mode='reflect'), RandomHorizontalFlip,
  ToTensor, Normalize), NCHW float32, no autocast, SGD with momentum. One
  iterator streams all warm-up and timed steps, so worker start-up is excluded
  and the workers prefetch across repetitions, as in a long epoch. Before each
  timed repetition it trains 4 untimed steps that use up the batches its workers
  prefetched while the other side was being timed (else they would come free).

Repetitions of the two sides are interleaved (reference/ours, then ours/reference,
...) so that a change of background load hits both. Reported: mean +- sample std,
min and max of images/second per side, the speed-up (ratio of means, the
conservative and optimistic ratios min/max and max/min, and the median of the
per-repetition ratios of back-to-back repetitions), a CPU-speed probe before
each repetition (a fixed matmul: it drops when other tenants take the CPU), achieved GFLOP/s from
`count_flops` (training ~ 3x forward multiply-adds, 2 FLOPs each) and, on CUDA,
the fraction of the GPU's dense bf16 peak.

Run: `.venv/bin/python benchmarks/train_throughput.py [--json results.json]`
(`--smoke-test` for a few-second check of the whole path).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from resnet_core import DataConfig, TrainConfig, TrainingRun, load_data
from resnet_core.data import DataSplits
from resnet_core.hardware import bf16_is_fast, cpu_has_fast_bf16, default_device
from resnet_core.models import build_model, count_flops, count_parameters, parse_model_name

DEFAULT_MODELS = ("wrn-16-2", "wrn-16-4")
# Timed steps per repetition when --steps is not given. WRN-16-4 trains at about
# 54 images/s with the reference loop on the 2-core CPU this was written on, so it
# gets fewer steps to keep the default run under about 5 minutes.
DEFAULT_STEPS = {"wrn-16-2": 24, "wrn-16-4": 8}
FALLBACK_STEPS = 16
VAL_IMAGES = 16  # the validation split TrainingRun scores after each epoch (untimed)
NUM_WORKERS = 2
PREFETCH_FACTOR = 2  # DataLoader's default: batches each worker keeps ready
# Untimed reference steps before each timed repetition: while the other side was
# timed, the reference workers filled their prefetch queue for free, so these
# steps use those batches up and the timed steps start in the steady state.
REFERENCE_REFILL_STEPS = NUM_WORKERS * PREFETCH_FACTOR

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched against
# torch.cuda.get_device_name(); the first matching entry wins.
GPU_PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


# ---------------------------------------------------------------- the reference loop


class HWCImages(Dataset):
    """uint8 HWC images (as torchvision's CIFAR10 stores them) -> PIL -> transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images = images_hwc
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), int(self.labels[index])


class ReferenceLoop:
    """The hand-written loop: DataLoader + per-image transforms, NCHW float32, SGD."""

    def __init__(self, model_name: str, data: DataSplits, batch_size: int, total_steps: int,
                 device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = device
        images_hwc = data.train.images.permute(0, 2, 3, 1).contiguous().numpy()
        labels = data.train.labels.numpy()
        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ])
        dataset = HWCImages(images_hwc, labels, transform)
        # A shuffled stream of exactly the batches needed (reshuffled every pass).
        sampler = RandomSampler(dataset, num_samples=total_steps * batch_size,
                                generator=torch.Generator().manual_seed(seed))
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                 num_workers=NUM_WORKERS, prefetch_factor=PREFETCH_FACTOR,
                                 drop_last=True, pin_memory=device.type == "cuda")
        self.batches = iter(self.loader)
        self.model = build_model(model_name, num_classes=data.num_classes,
                                 in_channels=data.in_channels).to(device)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                         weight_decay=5e-4)

    def run_steps(self, steps: int, untimed: int = 0) -> tuple[float, int]:
        """Train `untimed` then `steps` batches; return (seconds, images) of the latter.

        Syncs the device at both ends of the timed part.
        """
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for step in range(untimed + steps):
            if step == untimed:
                _sync(self.device)
                start = time.perf_counter()
                seen = 0
            images, labels = next(self.batches)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            seen += len(labels)
        if not torch.isfinite(loss_sum).item():  # one sync per repetition, like ours
            raise RuntimeError("reference loop diverged")
        _sync(self.device)
        return time.perf_counter() - start, seen

    def close(self) -> None:
        # Shut the worker processes down now rather than at interpreter exit.
        del self.batches


# ---------------------------------------------------------------- resnet_core


class CoreLoop:
    """resnet_core's TrainingRun with its defaults; one repetition = one epoch."""

    def __init__(self, model_name: str, data: DataSplits, batch_size: int,
                 device: torch.device, seed: int = 0) -> None:
        model_config = parse_model_name(model_name)
        # Defaults: amp=None (bf16 where fast), channels_last=True, DeviceLoader.
        config = TrainConfig(epochs=1_000_000, batch_size=batch_size, seed=seed)
        self.run = TrainingRun(model_config, config, data, device)
        self.images_per_epoch = len(self.run.train_loader) * batch_size
        if self.run.train_loader.num_images != self.images_per_epoch:
            raise AssertionError("training split is not a whole number of batches")

    def run_epoch(self) -> tuple[float, int]:
        """Train one epoch; return (training seconds, images) from TrainingRun's metrics."""
        metrics = self.run.train_epoch()
        images = self.images_per_epoch
        return images / metrics["images_per_second"], images


# ---------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SideResult:
    name: str
    seconds: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    probe_gflops: list[float] = field(default_factory=list)  # CPU speed just before each rep

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in zip(self.images, self.seconds, strict=True)]

    def summary(self) -> dict[str, Any]:
        rates = self.rates
        mean = statistics.fmean(rates)
        std = statistics.stdev(rates) if len(rates) > 1 else 0.0
        return {"images_per_second": rates, "mean": mean, "std": std,
                "min": min(rates), "max": max(rates),
                "cv_percent": 100.0 * std / mean if mean else 0.0,
                "images_per_repetition": self.images[0] if self.images else 0,
                "cpu_probe_gflops_before_each": self.probe_gflops}


def cpu_probe(size: int = 512, repeats: int = 8) -> float:
    """GFLOP/s of a fixed fp32 matmul on all torch threads: how much CPU we get right now.

    On a shared (virtual) machine this drops when other tenants take the cores; a
    repetition that starts with a low figure probably ran on a slowed machine.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpu_peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "n/a (CPU)"
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_PEAK_BF16_TFLOPS:
        if key in name:
            return peak, f"table entry {key!r} (dense bf16)"
    return None, f"unknown GPU {name!r}: pass --peak-tflops"


def machine_info(device: torch.device) -> dict[str, Any]:
    import PIL

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "device": str(device),
        "bf16_autocast_on_device": bf16_is_fast(device),
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


# ---------------------------------------------------------------- one model


def bench_model(name: str, args: argparse.Namespace, device: torch.device,
                peak_tflops: float | None) -> dict[str, Any]:
    steps = args.steps or DEFAULT_STEPS.get(name, FALLBACK_STEPS)
    batch = args.batch_size
    images_per_rep = steps * batch
    data = load_data(DataConfig(dataset="synthetic", synthetic_shape=(3, 32, 32),
                                synthetic_size=images_per_rep + VAL_IMAGES,
                                val_size=VAL_IMAGES))
    assert len(data.train) == images_per_rep

    cpu_copy = build_model(name, num_classes=data.num_classes, in_channels=data.in_channels)
    macs = count_flops(cpu_copy, (32, 32))  # on a CPU copy: count_flops feeds a CPU tensor
    params = count_parameters(cpu_copy)
    del cpu_copy
    train_flops_per_image = 3 * macs * 2

    print(f"\n== {name}: {params / 1e6:.2f} M parameters, {macs / 1e6:.1f} M forward MACs/image; "
          f"batch {batch}, {steps} timed steps ({images_per_rep} images) per repetition, "
          f"{args.repetitions} repetitions", flush=True)

    total_ref_steps = args.warmup_steps + args.repetitions * (REFERENCE_REFILL_STEPS + steps)
    ref = ReferenceLoop(name, data, batch, total_ref_steps, device)
    core = CoreLoop(name, data, batch, device)

    t0 = time.perf_counter()
    ref.run_steps(args.warmup_steps)
    t1 = time.perf_counter()
    core.run_epoch()  # warm-up: one epoch of the same length
    t2 = time.perf_counter()
    print(f"   warm-up: reference {args.warmup_steps} steps {t1 - t0:.1f} s "
          f"(incl. worker start), resnet_core 1 epoch {t2 - t1:.1f} s", flush=True)

    ref_result, core_result = SideResult("reference"), SideResult("resnet_core")
    for rep in range(args.repetitions):
        order = ("ref", "core") if rep % 2 == 0 else ("core", "ref")
        for side in order:
            probe = cpu_probe()
            if side == "ref":
                ref_result.probe_gflops.append(probe)
                seconds, images = ref.run_steps(steps, untimed=REFERENCE_REFILL_STEPS)
                ref_result.seconds.append(seconds)
                ref_result.images.append(images)
                # Let the workers finish their prefetch before the other side is timed.
                time.sleep(args.settle)
            else:
                core_result.probe_gflops.append(probe)
                seconds, images = core.run_epoch()
                core_result.seconds.append(seconds)
                core_result.images.append(images)
        print(f"   rep {rep + 1}/{args.repetitions}: reference {ref_result.rates[-1]:7.1f} img/s"
              f"   resnet_core {core_result.rates[-1]:7.1f} img/s   (CPU probe before: "
              f"{ref_result.probe_gflops[-1]:.0f} / {core_result.probe_gflops[-1]:.0f} GFLOP/s)",
              flush=True)
    ref.close()

    ref_s, core_s = ref_result.summary(), core_result.summary()
    paired = [c / r for c, r in zip(core_result.rates, ref_result.rates, strict=True)]
    for s in (ref_s, core_s):
        s["gflops"] = s["mean"] * train_flops_per_image / 1e9
        if peak_tflops:
            s["fraction_of_peak"] = s["gflops"] / (peak_tflops * 1e3)
    return {
        "model": name,
        "parameters": params,
        "forward_macs_per_image": macs,
        "training_flops_per_image": train_flops_per_image,
        "batch_size": batch,
        "steps_per_repetition": steps,
        "warmup_steps_reference": args.warmup_steps,
        "untimed_refill_steps_reference_per_repetition": REFERENCE_REFILL_STEPS,
        "warmup_resnet_core": "1 epoch of the same length",
        "amp_bf16": core.run.amp,
        "channels_last": core.run.train_config.channels_last,
        "reference": ref_s,
        "resnet_core": core_s,
        "speedup_mean": core_s["mean"] / ref_s["mean"],
        "speedup_conservative": core_s["min"] / ref_s["max"],
        "speedup_optimistic": core_s["max"] / ref_s["min"],
        # Repetition i of both sides ran back to back, so their ratio cancels slow drifts.
        "speedup_paired": paired,
        "speedup_paired_median": statistics.median(paired),
    }


# ---------------------------------------------------------------- report


def print_report(result: dict[str, Any]) -> None:
    info, cfg = result["machine"], result["config"]
    print("\n" + "=" * 78)
    print("Training throughput: resnet_core vs hand-written reference loop")
    print("=" * 78)
    print(f"date (UTC)   {info['date_utc']}")
    print(f"machine      {info['cpu']}; {info['cpu_count']} cores "
          f"({info['cpus_usable']} usable); torch threads {info['torch_threads']}; "
          f"AVX-512 BF16/AMX: {info['cpu_fast_bf16']}")
    if "gpu" in info:
        print(f"gpu          {info['gpu']} (CUDA {info['cuda']}, cuDNN {info['cudnn']})")
    print(f"device       {info['device']}; bf16 autocast (resnet_core): "
          f"{info['bf16_autocast_on_device']}")
    print(f"versions     python {info['python']}, torch {info['torch']}, torchvision "
          f"{info['torchvision']}, numpy {info['numpy']}, pillow {info['pillow']}")
    print(f"load avg     start {info['load_average_start']}, end {info['load_average_end']}"
          + ("   (load > 1 at start: other work was running)" if info["loaded"] else ""))
    print(f"setup        batch {cfg['batch_size']}, {cfg['repetitions']} repetitions, "
          f"interleaved; reference: DataLoader {NUM_WORKERS} workers, PIL transforms, "
          f"NCHW fp32, SGD")
    print(f"command      {cfg['command']}")
    print()
    header = (f"{'model':<10} {'side':<12} {'img/s mean ± std':>20} {'min':>8} {'max':>8} "
              f"{'GFLOP/s':>8}")
    if cfg["peak_tflops"]:
        header += f" {'% peak':>7}"
    print(header)
    print("-" * len(header))
    for m in result["models"]:
        for side in ("reference", "resnet_core"):
            s = m[side]
            line = (f"{m['model']:<10} {side:<12} {s['mean']:>10.1f} ± {s['std']:<7.1f} "
                    f"{s['min']:>8.1f} {s['max']:>8.1f} {s['gflops']:>8.1f}")
            if cfg["peak_tflops"]:
                line += f" {100 * s['fraction_of_peak']:>6.2f}%"
            print(line)
        print(f"{'':<10} {'speed-up':<12} {m['speedup_mean']:>9.2f}x   "
              f"(range {m['speedup_conservative']:.2f}x .. {m['speedup_optimistic']:.2f}x: "
              f"min/max .. max/min)")
        paired = ", ".join(f"{x:.2f}" for x in m["speedup_paired"])
        print(f"{'':<10} {'paired':<12} {m['speedup_paired_median']:>9.2f}x   "
              f"(median of per-repetition ratios: {paired})")
    probes = [p for m in result["models"] for side in ("reference", "resnet_core")
              for p in m[side]["cpu_probe_gflops_before_each"]]
    print(f"\nCPU probe (512x512 fp32 matmul, before each timed repetition): "
          f"{min(probes):.0f} .. {max(probes):.0f} GFLOP/s"
          + ("  <- varied > 1.5x: the CPU was shared, expect noisy figures"
             if max(probes) > 1.5 * min(probes) else ""))
    if cfg["peak_tflops"]:
        print(f"\npeak: {cfg['peak_tflops']} TFLOP/s ({cfg['peak_source']}); "
              "training FLOPs = 3 x forward MACs x 2 per image")
    else:
        print(f"\nGFLOP/s: training FLOPs = 3 x forward MACs x 2 per image "
              f"({cfg['peak_source']})")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"registry names (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per repetition (default per model: {DEFAULT_STEPS}, "
                             f"else {FALLBACK_STEPS})")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="untimed reference steps first, default 5 (resnet_core warms up "
                             "one epoch)")
    parser.add_argument("--repetitions", type=int, default=None, help="default: 3")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the accelerator's peak (dense bf16) TFLOP/s for the %% of peak")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds to wait after a reference repetition so that its "
                             "workers finish prefetching (default 0.5)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny run of the whole path (seconds): wrn-16-2, batch 16, "
                             "2 steps, 2 reps, unless given")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results here")
    args = parser.parse_args(argv)
    defaults = {"models": list(DEFAULT_MODELS), "batch_size": 128, "steps": None,
                "repetitions": 3, "warmup_steps": 5, "settle": 0.5}
    if args.smoke_test:
        defaults.update(models=["wrn-16-2"], batch_size=16, steps=2, repetitions=2,
                        warmup_steps=1, settle=0.0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch_size", "repetitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    for name in args.models:
        try:
            parse_model_name(name)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    peak, peak_source = gpu_peak_tflops(device, args.peak_tflops)
    info = machine_info(device)
    command = " ".join([os.path.relpath(sys.executable), *sys.argv]) if argv is None else str(argv)
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, torch threads "
          f"{info['torch_threads']}, device {device}; load average {info['load_average_start']}",
          flush=True)

    models = [bench_model(name, args, device, peak) for name in args.models]
    info["load_average_end"] = load_average()
    start_load = (info["load_average_start"] or [0.0])[0]
    info["loaded"] = start_load > 1.0
    result = {
        "machine": info,
        "config": {"models": args.models, "batch_size": args.batch_size, "steps": args.steps,
                   "warmup_steps": args.warmup_steps, "repetitions": args.repetitions,
                   "smoke_test": args.smoke_test, "peak_tflops": peak,
                   "peak_source": peak_source, "command": command},
        "models": models,
    }
    print_report(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
