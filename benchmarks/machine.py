"""What a benchmark ran on: CPU model and flags, cores, load, library versions."""

from __future__ import annotations

import os
import platform
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
