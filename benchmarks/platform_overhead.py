"""Platform overhead: what `resnet-search run` costs over training the same networks without it.

    .venv/bin/python benchmarks/platform_overhead.py [--reps 2] [--json PATH] [--quick]

(a) Long trials: 4 identical 20-epoch WRN-16-2 digits trials, one at a time, through
    `resnet-search run` (Ray, Optuna, MLflow tracking, per-epoch checkpoints, the champion)
    against the same 4 runs of `resnet-search train` one after another.
    Target: study wall time / bare wall time <= 1.10.
(b) Many short trials: 32 trials of 2 epochs of ResNet-8 on digits, 2 at a time, through
    `resnet-search run` against the loop a user would otherwise write: an in-process
    Optuna study with n_jobs=2 training the same networks with resnet_core (no Ray, no
    MLflow, no checkpoints). Target: <= 1.25x its wall time.
(b') `--marginal`: what one more trial costs, which is what a study of thousands of trials
    pays: (b) again with 3x the trials on both sides, and the ratio of the slopes,
    (study(96) - study(32)) / (plain(96) - plain(32)). The fixed cost of a study (its
    process, Ray, the champion) cancels out; what is left is the per-trial cost of Tune's
    scheduling, tracking, checkpoints and trial start-up against the plain loop's.

`--address ADDR` runs the study side on a Ray that is already running (`cluster/local.sh
up 0`, as a user with a local cluster up would): the difference to a run without it is
what starting and stopping a private Ray costs each study.

Both sides of a case alternate within each repetition, so a change in machine load
hits both. Each result records the machine, versions, repetitions and spread. The
study side prints its own phase breakdown ("where the time went"), kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine, spread, write_result

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "search.cli.main"]


def study_text(name: str, *, samples: int, epochs: int, concurrent: int, space: str,
               cpus_per_trial: float) -> str:
    return f"""
[study]
name = "{name}"
num_samples = {samples}
max_concurrent_trials = {concurrent}
seed = 0

[data]
dataset = "digits"

[train]
epochs = {epochs}
batch_size = 128
optimizer = "sgd"

[space]
{space}

[scheduler]
kind = "none"

[resources]
cpus_per_trial = {cpus_per_trial}
"""


def timed_command(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def phase_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("where the time went")), None)
    return [] if start is None else lines[start:start + 3]


def study_command(path: Path, address: str | None) -> list[str]:
    return [*CLI, "run", str(path), "--quiet", *(["--address", address] if address else [])]


def case_long(rep: int, scratch: Path, env: dict[str, str], epochs: int, trials: int,
              address: str | None = None) -> dict[str, Any]:
    """(a): the same WRN-16-2 recipe 4 times, one at a time, study vs bare `train`."""
    path = scratch / f"long-{rep}.toml"
    path.write_text(study_text(f"long-{rep}", samples=trials, epochs=epochs, concurrent=1,
                               space='family = "wrn"\ndepth = 16\nwidth = 2\nlr = 0.1',
                               cpus_per_trial=os.cpu_count() or 1))
    study_s, stdout = timed_command(study_command(path, address), env, scratch)
    bare_s = 0.0
    for i in range(trials):
        seconds, _ = timed_command([*CLI, "train", "--model", "wrn-16-2", "--dataset", "digits",
                                    "--epochs", str(epochs), "--lr", "0.1", "--seed", str(i),
                                    "--quiet", "--out", str(scratch / f"bare-{rep}-{i}")],
                                   env, scratch)
        bare_s += seconds
    return {"study_s": study_s, "bare_s": bare_s, "ratio": study_s / bare_s,
            "phases": phase_lines(stdout)}


PLAIN_LOOP = """
import json, sys, time
import optuna, torch
from resnet_core import DataConfig, ModelConfig, TrainConfig, TrainingRun, fit, load_data

trials, epochs = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)  # two jobs share the two cores, as the study's trials do
optuna.logging.set_verbosity(optuna.logging.WARNING)
data_config = DataConfig(dataset="digits")
data = load_data(data_config)

def objective(trial):
    lr = trial.suggest_float("lr", 0.03, 0.3, log=True)
    run = TrainingRun(ModelConfig(family="resnet", depth=8),
                      TrainConfig(epochs=epochs, batch_size=128, optimizer="sgd", lr=lr,
                                  seed=trial.number),
                      data, device="cpu", data_config=data_config)
    fit(run)
    return max(m["val_accuracy"] for m in run.history)

start = time.perf_counter()
optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0)).optimize(
    objective, n_trials=trials, n_jobs=2)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def case_short(rep: int, scratch: Path, env: dict[str, str], trials: int, epochs: int,
               address: str | None = None) -> dict[str, Any]:
    """(b): many 2-epoch ResNet-8 trials, 2 at a time, study vs an in-process Optuna loop."""
    path = scratch / f"short-{rep}-{trials}.toml"
    path.write_text(study_text(f"short-{rep}-{trials}", samples=trials, epochs=epochs, concurrent=2,
                               space='family = "resnet"\ndepth = 8\nlr = { low = 0.03, high = 0.3, '
                                     'log = true }', cpus_per_trial=1))
    study_s, stdout = timed_command(study_command(path, address), env, scratch)
    plain_total, out = timed_command([sys.executable, "-c", PLAIN_LOOP, str(trials), str(epochs)],
                                     env, scratch)
    plain_s = plain_total  # the whole process, imports and data included, as for the study
    return {"trials": trials, "study_s": study_s, "plain_s": plain_s, "ratio": study_s / plain_s,
            "plain_loop_s": json.loads(out.strip().splitlines()[-1])["seconds"],
            "phases": phase_lines(stdout)}


def case_marginal(rep: int, scratch: Path, env: dict[str, str], small: dict[str, Any],
                  trials: int, address: str | None = None) -> dict[str, Any]:
    """(b'): (b) with `trials` trials; `small` is this repetition's (b) result."""
    large = case_short(rep, scratch, env, trials, 2, address)
    added = trials - small["trials"]
    study_slope = (large["study_s"] - small["study_s"]) / added
    plain_slope = (large["plain_s"] - small["plain_s"]) / added
    return {"trials": trials, "study_s": large["study_s"], "plain_s": large["plain_s"],
            "study_s_per_trial": study_slope, "plain_s_per_trial": plain_slope,
            "ratio": study_slope / plain_slope, "phases": large["phases"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/platform_overhead.json")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny cases, one rep")
    parser.add_argument("--only", choices=("long", "short"), default=None)
    parser.add_argument("--marginal", action="store_true",
                        help="(b'): also run (b) with 3x the trials; the ratio of per-trial slopes")
    parser.add_argument("--address", default=None,
                        help="run the studies on this running Ray (token auth, as cluster/local.sh)")
    args = parser.parse_args(argv)
    long_epochs, long_trials, short_trials = (2, 2, 4) if args.quick else (20, 4, 32)
    reps = 1 if args.quick else args.reps
    result: dict[str, Any] = {"machine": machine(), "quick": args.quick, "address": args.address,
                              "long": [], "short": [], "marginal": []}
    with tempfile.TemporaryDirectory(prefix="resnet-search-overhead-") as scratch_dir:
        scratch = Path(scratch_dir)
        env = {**os.environ, "RESNET_SEARCH_HOME": str(scratch / "home"), "PYTHONPATH": str(ROOT),
               "RESNET_SEARCH_QUIET": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("RAY_ADDRESS", None)
        if args.address:
            env["RAY_AUTH_MODE"] = "token"
        for rep in range(reps):
            if args.only in (None, "long"):
                result["long"].append(case_long(rep, scratch, env, long_epochs, long_trials,
                                                args.address))
                print(f"(a) rep {rep}: {result['long'][-1]['ratio']:.3f}", flush=True)
            if args.only in (None, "short"):
                result["short"].append(case_short(rep, scratch, env, short_trials, 2, args.address))
                print(f"(b) rep {rep}: {result['short'][-1]['ratio']:.3f}", flush=True)
                if args.marginal:
                    result["marginal"].append(case_marginal(rep, scratch, env, result["short"][-1],
                                                            3 * short_trials, args.address))
                    m = result["marginal"][-1]
                    print(f"(b') rep {rep}: {m['study_s_per_trial']:.3f} s vs "
                          f"{m['plain_s_per_trial']:.3f} s a trial, ratio {m['ratio']:.3f}",
                          flush=True)
    for case, target in (("long", 1.10), ("short", 1.25), ("marginal", 1.25)):
        if result[case]:
            result[f"{case}_ratio"] = spread([r["ratio"] for r in result[case]])
            r = result[f"{case}_ratio"]
            print(f"{case}: ratio {r['mean']:.3f} +- {r['std']:.3f} (n={r['n']}, target <= {target})")
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
