"""What a benchmark ran on (CPU model and flags, cores, load, library versions), and how its
result is summarised and written."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # these hosts vary between AVX2 and BF16
PACKAGES = ("torch", "ray", "optuna", "mlflow", "numpy")


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "platform": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                            if line.startswith("model name")), "")
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), [])
        info["flags"] = {f: f in flags for f in CPU_FLAGS}
    except OSError:
        pass
    info["versions"] = {p: version(p) for p in PACKAGES}
    info["loadavg_start"] = os.getloadavg()
    return info


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min, max and count of repeated measurements."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def write_result(result: dict[str, Any], path: Path) -> None:
    """The benchmark's JSON, with the load average at its end beside the one at its start."""
    result["machine"]["loadavg_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
