"""How each reading command's cost grows with the trials of a study (`make bench-scale`).

For each size a fresh SQLite store gets one study written the way the platform writes one
(tests/scale_store.py: the trial callback's own writes for simulated Tune events, put into
MLflow's tables in bulk): every 10th trial runs all `--epochs`, the others are pruned after
their first, as under ASHA. Then each command runs as a user runs it (a new process, so
start-up is included) and the study run's summary is rewritten once in-process.

    python benchmarks/scale.py [--sizes 1000 10000] [--epochs 20] [--repeats 3] [--timeout 300]

Prints one JSON object (seconds per command: each repetition, median, spread) and writes it
to benchmarks/results/scale.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
sys.path += [str(ROOT / "tests"), str(ROOT / "tests" / "search")]

from scale_store import write_scale_study  # noqa: E402 - tests/ is put on the path above

COMMANDS = {
    "status": ["status", "scale"],
    "best": ["best", "scale"],
    "best --pareto": ["best", "scale", "--pareto"],
    "studies": ["studies"],
    "report": ["report", "scale", "--out", "{folder}/report"],
}


def timed_command(args: list[str], uri: str, timeout: float) -> float | None:
    """Wall seconds of `resnet-search ARGS` in a new process; None if it ran past `timeout`."""
    started = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "search.cli", *args, "--tracking-uri", uri],
                       cwd=ROOT, capture_output=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def summary_rewrite(uri: str, study_run_id: str) -> float:
    from search.tracking import store
    from search.tracking.summary import update_study_run

    client = store.client_for(uri)
    started = time.perf_counter()
    update_study_run(client, study_run_id)
    return time.perf_counter() - started


def measure(size: int, epochs: int, repeats: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="resnet-search-scale-") as folder:
        started = time.perf_counter()
        uri, study_run_id = write_scale_study(Path(folder), trials=size, epochs=epochs,
                                              best=size - 11)
        row = {"trials": size, "epochs": epochs, "write_s": round(time.perf_counter() - started, 1)}
        for name, args in COMMANDS.items():
            args = [a.format(folder=folder) for a in args]
            times = [timed_command(args, uri, timeout) for _ in range(repeats)]
            row[name] = _summary(times, timeout)
            print(f"{size} trials: {name}: {row[name]}", file=sys.stderr, flush=True)
        row["summary rewrite"] = _summary([summary_rewrite(uri, study_run_id)
                                           for _ in range(repeats)], timeout)
    return row


def _summary(times: list[float | None], timeout: float) -> dict:
    done = [t for t in times if t is not None]
    if len(done) < len(times):
        return {"runs": [None if t is None else round(t, 2) for t in times],
                "note": f"over {timeout:.0f} s"}
    return {"runs": [round(t, 2) for t in done], "median_s": round(statistics.median(done), 2),
            "spread_s": round(max(done) - min(done), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    from machine import machine  # benchmarks/: CPU, flags and library versions

    rows = [measure(size, args.epochs, args.repeats, args.timeout) for size in args.sizes]
    result = {"machine": machine(), "store": "sqlite", "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
