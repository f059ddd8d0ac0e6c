"""How each reading command's cost grows with the trials of a study (`make bench-scale`).

For each size a SQLite store gets one study written the way the platform writes one
(tests/scale_store.py: the trial callback's own writes for simulated Tune events, put into
MLflow's tables in bulk): every 10th trial runs all `--epochs`, the others are pruned after
their first, as under ASHA. The store's last step is the platform's summary rewrite, which
also writes the study's trial index (search.tracking.trial_index). Then:

- each command as a user runs it (a new process, start-up included): status, best,
  best --pareto, studies, report, resume of the finished study, load_best of its champion;
- the same reads in one process (start-up excluded), the summary rewrite, and the fallback:
  status of the study once its index is deleted (every trial run read whole);
- the start-up alone: a process importing what `status` imports.

load_best needs a champion: a wrn-16-2 trained for one epoch on digits (`resnet-search
train`) is registered for the study's best trial by the platform's own `register_champion`.

    python benchmarks/scale.py [--sizes 1000 10000] [--epochs 20] [--repeats 3] [--timeout 300]
                               [--stores DIR] [--store sqlite|postgresql]
    python benchmarks/scale.py --real-study [--trials 1000]

`--stores DIR` keeps each store in DIR (keyed by size, epochs and the version of
tests/scale_store.py) and reuses it: building 10,000 trials takes about two minutes.
`--store postgresql`: the same study written to a new database of the PostgreSQL server the
tests use (tests/postgres.py: RESNET_SEARCH_TEST_PG_HOST/_PORT/_USER, 127.0.0.1:5432 by default;
the artifacts stay in a local folder), dropped at the end unless `--stores` keeps it.
Prints one JSON object (seconds per command: each repetition, median, spread) and writes it
to benchmarks/results/scale.json (or --out).

`--real-study`: instead, a real study of `--trials` one-epoch trials on a 2-worker local cluster,
the driver's CPU and SQL statements per finished trial, first 100 against last 100
(benchmarks/scale_real_study.py); written to benchmarks/results/scale-real-study.json (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
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
    "resume (finished)": ["resume", "scale"],
}
LOAD_BEST = "from search.results.retrieve import load_best; load_best('scale', {uri!r})"
STARTUP = "import search.cli.main, search.results.retrieve, search.tracking.records"


def timed_process(args: list[str], timeout: float) -> float | None:
    """Wall seconds of a new Python process; None if it ran past `timeout`."""
    started = time.perf_counter()
    try:
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True,
                       timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def in_process(uri: str, study_run_id: str) -> dict:
    """The reads behind status, best --pareto, studies, the summary rewrite: callables."""
    from search.results.pareto import front_rows
    from search.results.retrieve import study_status
    from search.results.studies import list_studies
    from search.tracking import store
    from search.tracking.summary import update_study_run

    client = store.client_for(uri)
    return {
        "status (in-process)": lambda: study_status("scale", uri),
        "best --pareto (in-process)": lambda: front_rows(client, client.get_run(study_run_id)),
        "studies (in-process)": lambda: list_studies(uri),
        "summary rewrite (in-process)": lambda: update_study_run(client, study_run_id),
    }


def without_index(uri: str, study_run_id: str) -> float:
    """status, in-process, of the study with its index deleted: every trial run read whole
    (a study written before the index existed; the read writes the index again)."""
    from search.results.retrieve import study_status
    from search.tracking import store, tags

    run = store.client_for(uri).get_run(study_run_id)
    Path(run.info.artifact_uri.removeprefix("file://"), tags.TRIAL_INDEX_ARTIFACT).unlink()
    started = time.perf_counter()
    study_status("scale", uri)
    return time.perf_counter() - started


def register_champion_for(folder: Path, uri: str, study_run_id: str) -> None:
    """A real champion for the study's best trial: a one-epoch wrn-16-2 on digits, scored on
    the test split, logged and registered by the platform's own register_champion."""
    from ray.tune import Checkpoint

    from search.study.champion import Winner, register_champion
    from search.studyfile.config import load_study
    from search.tracking import store
    from search.tracking.trial_index import current_trial_runs
    from search.trial.spec import TrialSpec

    trained = folder / "champion"
    subprocess.run([sys.executable, "-m", "search.cli", "train", "--model", "wrn-16-2",
                    "--epochs", "1", "--out", str(trained), "--quiet"], cwd=ROOT, check=True,
                   capture_output=True)
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    score, run = store.rank_runs(study_run, current_trial_runs(client, study_run))[0]
    spec = TrialSpec.from_tune({"optuna_trial_number": score.number,
                                "model": {"family": "wrn", "depth": 16, "width": 2},
                                "train": {"optimizer": "sgd", "lr": 0.05}})
    register_champion(load_study(folder / "scale.toml"), uri, study_run_id,
                      Winner(score, run.info.run_id, spec, Checkpoint.from_directory(trained)))


def study_store(size: int, epochs: int, stores: Path | None, backend: str = "sqlite"
                ) -> tuple[Path, str, str, float | None]:
    """(folder, uri, study run id, seconds it took to write; None: reused) of a study of `size`
    trials with a registered champion, in a SQLite file or a PostgreSQL database."""
    version = hashlib.sha256((ROOT / "tests" / "scale_store.py").read_bytes()).hexdigest()[:8]
    store_name = f"scale-{size}x{epochs}-{version}" + ("-pg" if backend == "postgresql" else "")
    folder = (stores or Path(tempfile.mkdtemp(prefix="resnet-search-scale-"))) / store_name
    ids = folder / "study.json"
    if ids.is_file():
        known = json.loads(ids.read_text())
        return folder, known["uri"], known["study_run_id"], None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    uri = postgres_database(store_name.replace("-", "_")) if backend == "postgresql" else None
    started = time.perf_counter()
    uri, study_run_id = write_scale_study(folder, trials=size, epochs=epochs, best=size - 11,
                                          uri=uri)
    seconds = time.perf_counter() - started
    register_champion_for(folder, uri, study_run_id)
    ids.write_text(json.dumps({"uri": uri, "study_run_id": study_run_id}))
    return folder, uri, study_run_id, seconds


def postgres_database(name: str) -> str:
    """The URI of a new, empty database `name` on the tests' PostgreSQL server (any old one of
    that name dropped first: a store kept by --stores is found by its folder, not here)."""
    from postgres import admin_connection, database_uri  # tests/: the one PostgreSQL helper

    with admin_connection() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return database_uri(name)


def drop_postgres_database(uri: str) -> None:
    from postgres import admin_connection

    with admin_connection() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{uri.rsplit("/", 1)[1]}" WITH (FORCE)')


def measure(size: int, epochs: int, repeats: int, timeout: float, stores: Path | None,
            backend: str = "sqlite") -> dict:
    folder, uri, study_run_id, write_s = study_store(size, epochs, stores, backend)
    row = {"trials": size, "epochs": epochs, "store": backend,
           "write_s": None if write_s is None else round(write_s, 1),
           "index_bytes": _index_bytes(uri, study_run_id)}
    processes = {name: ["-m", "search.cli", *[a.format(folder=folder) for a in args],
                        "--tracking-uri", uri] for name, args in COMMANDS.items()}
    processes["load_best"] = ["-c", LOAD_BEST.format(uri=uri)]
    processes["start-up (imports of status)"] = ["-c", STARTUP]
    for name, args in processes.items():
        row[name] = _summary([timed_process(args, timeout) for _ in range(repeats)], timeout)
        print(f"{size} trials: {name}: {row[name]}", file=sys.stderr, flush=True)
    for name, read in in_process(uri, study_run_id).items():
        row[name] = _summary([_timed(read) for _ in range(repeats)], timeout)
        print(f"{size} trials: {name}: {row[name]}", file=sys.stderr, flush=True)
    row["status without the index (in-process)"] = _summary([without_index(uri, study_run_id)],
                                                             timeout)
    if stores is None:
        shutil.rmtree(folder.parent, ignore_errors=True)
        if backend == "postgresql":
            drop_postgres_database(uri)
    return row


def _index_bytes(uri: str, study_run_id: str) -> int:
    from search.tracking import store, tags

    run = store.client_for(uri).get_run(study_run_id)
    return Path(run.info.artifact_uri.removeprefix("file://"), tags.TRIAL_INDEX_ARTIFACT).stat().st_size


def _timed(read) -> float:
    started = time.perf_counter()
    read()
    return time.perf_counter() - started


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
    parser.add_argument("--stores", type=Path, default=None)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--real-study", action="store_true",
                        help="a real study on a 2-worker local cluster instead")
    parser.add_argument("--trials", type=int, default=1000, help="trials of --real-study")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials: {args.trials} must be at least 1")
    from machine import machine, write_result  # benchmarks/: CPU, flags, versions, load

    host = machine()  # before the measurements: its load average is the one at the start
    if args.real_study:
        from scale_real_study import run_real_study  # benchmarks/

        result = {"machine": host, "store": "sqlite", "real_study": run_real_study(args.trials)}
        out = args.out or ROOT / "benchmarks" / "results" / "scale-real-study.json"
    else:
        rows = [measure(size, args.epochs, args.repeats, args.timeout, args.stores, args.store)
                for size in args.sizes]
        result = {"machine": host, "store": args.store, "results": rows}
        out = args.out or ROOT / "benchmarks" / "results" / "scale.json"
    write_result(result, out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
