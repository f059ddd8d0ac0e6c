"""A real study of many one-epoch trials on a 2-worker local cluster: does the driver's work per
trial stay flat as the study grows? (`python benchmarks/scale.py --real-study --trials 1000`)

The cluster is `cluster/local.sh up 2` (tests/search/local_cluster.py), a head with no CPUs for
trials (HEAD_CPUS=0: the driver keeps its core) and two workers of one CPU each. The study: digits,
WRN-10-1 (the smallest network of the tests' space), one epoch at batch 64, Optuna's random
sampler, no scheduler, `--trials` samples, tracked to a SQLite store; the driver runs as a user
runs it (`resnet-search run FILE --address ...`, live table on, to a log file).

While it runs, every second: the driver's CPU time (utime + stime of /proc/PID/stat), the
finished trial runs in the store (read-only SQLite, end_time set) and the SQL statements the
driver has sent (benchmarks/sql_counter/sitecustomize.py on its PYTHONPATH counts them by verb).
From the samples: driver CPU seconds and SQL statements per finished trial over the first 100
finished trials (from the first finish, so start-up is left out), every further block of 100,
and the last 100.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 100  # finished trials per block
SAMPLE_S = 1.0
TICKS = os.sysconf("SC_CLK_TCK")


def study_file(folder: Path, trials: int) -> Path:
    """The study: many small one-epoch trials (see the module's docstring)."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "search")]
    from common import toml_document

    document = {
        "study": {"name": "real-scale", "num_samples": trials, "seed": 1, "sampler": "random"},
        "data": {"dataset": "digits"},
        "train": {"epochs": 1, "batch_size": 64},
        "space": {"family": "wrn", "depth": 10, "width": 1,
                  "lr": {"low": 0.01, "high": 0.3, "log": True}},
        "scheduler": {"kind": "none"},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}", "registered_model": "real-scale"},
        "storage": {"path": str(folder / "results")},
    }
    path = folder / "real-scale.toml"
    path.write_text(toml_document(document))
    return path


def driver_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def finished_trials(database: Path) -> int:
    """Trial runs with an end in the store (read-only: never a lock the driver waits on)."""
    if not database.exists():
        return 0
    from search.tracking import tags

    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.5) as db:
            return db.execute(
                "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = ? AND t.value = ? AND r.end_time IS NOT NULL",
                (tags.KIND, tags.KIND_TRIAL)).fetchone()[0]
    except sqlite3.Error:  # the tables are not there yet, or busy this instant
        return -1


def sample(driver: subprocess.Popen, database: Path, counts: Path, log) -> list[dict[str, Any]]:
    """One sample a second until the driver ends: time, CPU, finished trials, SQL counts."""
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while driver.poll() is None:
        cpu = driver_cpu_s(driver.pid)
        done = finished_trials(database)
        if done < 0 and samples:
            done = samples[-1]["finished"]
        try:
            sql = json.loads(counts.read_text())
        except (OSError, ValueError):
            sql = samples[-1]["sql"] if samples else {}
        if cpu is not None:
            row = {"t": round(time.monotonic() - started, 2), "cpu": cpu, "finished": max(done, 0),
                   "sql": sql, "load": os.getloadavg()[0]}
            samples.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
        time.sleep(SAMPLE_S)
    return samples


def per_trial(samples: list[dict[str, Any]], first: int, last: int) -> dict[str, Any]:
    """Driver CPU, SQL statements and wall time per trial between the samples where the finished
    count first reached `first` and `last`."""
    a = next(s for s in samples if s["finished"] >= first)
    b = next(s for s in samples if s["finished"] >= last)
    n = b["finished"] - a["finished"]
    if n <= 0:
        return {"trials": f"{first}-{last}", "note": "no trial finished in between"}
    sql = {k: round((b["sql"].get(k, 0) - a["sql"].get(k, 0)) / n, 1) for k in b["sql"]}
    return {"trials": f"{a['finished']}-{b['finished']}", "finished": n,
            "driver_cpu_ms_per_trial": round(1000 * (b["cpu"] - a["cpu"]) / n, 1),
            "wall_s_per_trial": round((b["t"] - a["t"]) / n, 3),
            "sql_per_trial": sql, "load_average": round((a["load"] + b["load"]) / 2, 2)}


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last WINDOW finished trials (a short debugging run: its first and last third)."""
    total = max((s["finished"] for s in samples), default=0)
    first = next((s for s in samples if s["finished"] >= 1), None)
    window = min(WINDOW, (total - 1) // 3)
    if first is None or window < 1:
        return {"finished": total, "note": "too few trials finished"}
    blocks = [per_trial(samples, start, min(start + window, total))
              for start in range(1, total, window) if start + window // 2 <= total]
    head, tail = per_trial(samples, 1, 1 + window), per_trial(samples, total - window, total)
    ratio = tail["driver_cpu_ms_per_trial"] / head["driver_cpu_ms_per_trial"]
    return {"finished": total, "window": window, "start_up_cpu_s": round(first["cpu"], 1),
            "driver_cpu_s_total": round(samples[-1]["cpu"], 1), "wall_s": samples[-1]["t"],
            "first": head, "last": tail, "last_over_first_cpu": round(ratio, 2),
            "target_met (<= 1.2x)": ratio <= 1.2, "blocks": blocks}


class _Started:
    """A cluster already up, as a context manager that stops it."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def __enter__(self) -> str:
        return self.cluster.address

    def __exit__(self, *exc: Any) -> None:
        self.cluster.__exit__(*exc)


def started_cluster(local_cluster: type, folder: Path, attempts: int = 4) -> _Started:
    """`local.sh up 2`, tried again when a node does not come up: on a loaded 2-core machine
    (load 10-13) Ray's raylet gives up waiting ~15 s for its node's dashboard agent (a Python
    process importing slowly), and three starts in four failed so."""
    from local_cluster import free_port_block

    # Ports far from the tests' clusters (free_port_block starts at 21000 for a lone pytest):
    # a test's cluster starting on the same block at the same moment took it once.
    os.environ.update(PYTEST_XDIST_WORKER="gw7", PYTEST_XDIST_WORKER_COUNT="8")
    for attempt in range(1, attempts + 1):
        cluster = local_cluster(folder / f"cluster-{attempt}", workers=2, HEAD_CPUS="0",
                                RAY_PORT=str(free_port_block()))
        try:
            cluster.__enter__()
            return _Started(cluster)
        except AssertionError as error:
            print(f"real study: cluster start {attempt} failed: {str(error)[-300:]}",
                  file=sys.stderr, flush=True)
    raise RuntimeError(f"the local cluster did not start in {attempts} attempts")


def run_real_study(trials: int, keep: Path | None = None, timeout: float = 4 * 3600) -> dict:
    """Run the study on a fresh 2-worker cluster; the summary of its samples."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "search")]
    from local_cluster import LocalCluster

    folder = Path(keep or tempfile.mkdtemp(prefix="resnet-search-real-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    study = study_file(folder, trials)
    counts = folder / "sql-counts.json"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RESNET_SEARCH_SQL_COUNTS": str(counts),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "benchmarks" / "sql_counter"),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    cluster = started_cluster(LocalCluster, folder)
    with cluster as address, \
            open(folder / "driver.log", "w") as output, open(folder / "samples.jsonl", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "search.cli", "run", str(study),
                                   "--address", address], cwd=ROOT, env=env, stdout=output,
                                  stderr=subprocess.STDOUT)
        print(f"real study: driver pid {driver.pid}, folder {folder}", file=sys.stderr, flush=True)
        try:
            samples = sample(driver, folder / "mlflow.db", counts, log)
            driver.wait(timeout=timeout)
        finally:
            if driver.poll() is None:
                driver.terminate()
                driver.wait(timeout=60)
    result = {"trials": trials, "folder": str(folder), "driver_exit": driver.returncode,
              **summarise(samples)}
    (folder / "summary.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(run_real_study(int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=2))
