"""What each reading command costs a user at 1,000 and 10,000 trials, read locally or through
MLflow: wall time of a new process, start-up included.

`status`, `best`, `best --pareto` and `studies` read a local SQLite store without MLflow
(search.tracking.local_store), `load_best` finds the champion's checkpoint in the store's
folder; RESNET_SEARCH_READ_THROUGH_MLFLOW=1 sends the same commands through MLflow, as every
other store goes. Both are timed on the same stores (benchmarks/scale.py's, built once with
`--stores`), their repetitions interleaved so that a change of the machine's load falls on both.
Also timed, to say where a command's time goes: a bare Python, the imports of `status` (its
start-up) and `import torch` (load_best builds a network).

    python benchmarks/scale_commands.py --stores DIR [--sizes 1000 10000] [--repeats 5]

Prints one JSON object (wall and CPU seconds: each repetition, median, spread; the load
average before and after each size; load_best in a process that has imported torch already)
and writes it to benchmarks/results/scale-commands.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from scale import study_store  # noqa: E402 - benchmarks/ is put on the path above

COMMANDS = {
    "status": ["-m", "search.cli", "status", "scale", "--tracking-uri", "{uri}"],
    "best": ["-m", "search.cli", "best", "scale", "--tracking-uri", "{uri}"],
    "best --pareto": ["-m", "search.cli", "best", "scale", "--pareto", "--tracking-uri", "{uri}"],
    "studies": ["-m", "search.cli", "studies", "--tracking-uri", "{uri}"],
    "load_best": ["-c", "from search.results.retrieve import load_best; load_best('scale', '{uri}')"],
}
READERS = {"local": {}, "through MLflow": {"RESNET_SEARCH_READ_THROUGH_MLFLOW": "1"}}
BASELINES = {
    "python -c pass": ["-c", "pass"],
    "start-up of status (its imports)": [
        "-c", "import search.cli.main, search.results.retrieve, search.results.studies"],
    "import torch": ["-c", "import torch"],
}


def timed(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, float] | None:
    """(wall seconds, CPU seconds: user + system) of a new Python process; None if it failed
    or ran past `timeout`. The CPU time is what the wall time would be on an idle machine,
    near enough: on this shared 2-core host the wall time is mostly waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, **env},
                       capture_output=True, check=True, timeout=timeout)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        return None
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process_load_best(uri: str, timeout: float) -> float | None:
    """Seconds of load_best in a process that has imported torch already (a user's PyTorch
    program or notebook calling it): the part of load_best that is not torch's import."""
    code = ("import time, torch; from search.results.retrieve import load_best; "
            f"started = time.perf_counter(); load_best('scale', {uri!r}); "
            "print(time.perf_counter() - started)")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=timeout)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        return None
    return float(done.stdout.strip().splitlines()[-1])


def measure(size: int, epochs: int, repeats: int, timeout: float, stores: Path) -> dict:
    _, uri, _, _ = study_store(size, epochs, stores)
    runs: dict[str, list[tuple[float, float] | None]] = {}
    load_best_after_torch: list[float | None] = []
    load_before = os.getloadavg()
    for _ in range(repeats):  # interleaved: each repetition times every command once
        for reader, env in READERS.items():
            for name, args in COMMANDS.items():
                key = f"{name} ({reader})"
                runs.setdefault(key, []).append(
                    timed([a.format(uri=uri) for a in args], env, timeout))
        for name, args in BASELINES.items():
            runs.setdefault(name, []).append(timed(args, {}, timeout))
        load_best_after_torch.append(in_process_load_best(uri, timeout))
    row = {"trials": size, "epochs": epochs, "loadavg_before": load_before,
           "loadavg_after": os.getloadavg()}
    for key, times in runs.items():
        row[key] = {"wall": summary([t and t[0] for t in times]),
                    "cpu": summary([t and t[1] for t in times])}
        print(f"{size} trials: {key}: {row[key]}", file=sys.stderr, flush=True)
    row["load_best after import torch (in-process)"] = summary(load_best_after_torch)
    return row


def summary(times: list[float | None]) -> dict:
    done = [t for t in times if t is not None]
    result: dict = {"runs": [None if t is None else round(t, 2) for t in times]}
    if done:
        result |= {"median_s": round(statistics.median(done), 2),
                   "spread_s": round(max(done) - min(done), 2)}
    if len(done) < len(times):
        result["note"] = "a run failed or timed out"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--stores", type=Path, required=True,
                        help="the folder of benchmarks/scale.py's stores (built there if missing)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "scale-commands.json")
    args = parser.parse_args()
    from machine import machine, write_result  # benchmarks/: CPU, flags, versions, load

    host = machine()  # before the measurements: its load average is the one at the start
    rows = [measure(size, args.epochs, args.repeats, args.timeout, args.stores)
            for size in args.sizes]
    result = {"machine": host, "store": "sqlite", "results": rows}
    write_result(result, args.out)  # adds the load average at the end
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
