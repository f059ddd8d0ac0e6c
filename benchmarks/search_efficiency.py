"""Search efficiency: random vs TPE, with and without ASHA, at the same trial-epoch budget.

Every method searches the same space (a WRN / ResNet / pre-act ResNet space on
scikit-learn's digits, close to the quickstart's) with the same epochs per
trial and the same total budget of trial-epochs (`trials * epochs`). Methods
without early stopping run exactly `trials` trials; methods with a scheduler
run as many trials as the budget allows (a `tune.Stopper` ends the study when
the budget is spent). Trials run through the platform's own pieces: the study
file format (`search.studyfile.config.parse_study`), the trainable with its resources
(`search.study.resources.wrap_trainable`), the Optuna searcher (`search.space.searcher.
build_searcher`: the platform's TPE / random sampler with its defaults), the
ASHA scheduler as `search.study.run.build_tuner` makes it, and MLflow tracking
(`search.study.run.trial_callback`) into a throwaway store.

Anytime curves, one point per reported epoch (= one trial-epoch):
    best_val       best validation accuracy reported so far (any trial, any epoch)
    selected_test  test accuracy of the checkpoint the platform would pick at that
                   point (best val accuracy, ties to the lower val loss, then the
                   earlier report), scored once when it becomes the pick
    wall_s         seconds since the study's Tuner started
Headline: trial-epochs each method needs to reach random search's final median
best val accuracy (median over seeds; a seed that never reaches it counts as
never), as a ratio to random's; final selected test accuracy mean +- std.

Run: `.venv/bin/python benchmarks/search_efficiency.py` (about 45 minutes on 2
CPU cores; `--quick` is a one-seed smoke test of the whole path, about a minute).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from any directory

from machine import machine  # noqa: E402 - benchmarks/ is on sys.path when run as a script

RESULTS = HERE / "results" / "search_efficiency.json"
NEAR_TARGET_IMAGES = 2
PLOT = HERE / "results" / "search_efficiency.png"


@dataclass(frozen=True)
class Method:
    name: str
    sampler: str  # "random" | "tpe" (the platform's samplers) | "gp" (Optuna's GPSampler)
    scheduler: str  # "none" | "asha"
    grace_period: int | None = None  # None: the platform's default ([scheduler] grace_period)


METHODS = (
    Method("random", "random", "none"),
    Method("tpe", "tpe", "none"),
    Method("random+asha", "random", "asha"),
    Method("tpe+asha", "tpe", "asha"),
    # Explicit first rungs: after 1 epoch (the platform's default before this benchmark,
    # what random+asha and tpe+asha ran with in results/search_efficiency.json) and after 2.
    Method("tpe+asha-g1", "tpe", "asha", grace_period=1),
    Method("tpe+asha-g2", "tpe", "asha", grace_period=2),
    # Not run by default: GP fitting in the driver costs more than a digits trial here.
    Method("gp+asha", "gp", "asha"),
)
DEFAULT_METHODS = ("random", "tpe", "random+asha", "tpe+asha", "tpe+asha-g1")


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    trials: int  # trials of a method without early stopping: budget = trials * epochs
    epochs: int
    val_size: int
    max_trials_with_scheduler: int  # an upper bound; the budget ends these studies


FULL = Settings(seeds=(0, 1, 2, 3, 4), trials=16, epochs=8, val_size=400,
                max_trials_with_scheduler=96)
QUICK = Settings(seeds=(0,), trials=3, epochs=2, val_size=400, max_trials_with_scheduler=12)


def study_file(method: Method, seed: int, settings: Settings, root: Path) -> dict[str, Any]:
    """The study as its TOML file would hold it (parsed and validated by the platform)."""
    asha = method.scheduler == "asha"
    return {
        "study": {"name": f"bench-{method.name.replace('+', '-')}-s{seed}",
                  "num_samples": settings.max_trials_with_scheduler if asha else settings.trials,
                  "metric": "val_accuracy", "mode": "max", "seed": seed,
                  "sampler": "random" if method.sampler == "random" else "tpe"},
        # 400 validation images: one image is 0.25%, so good trials rarely tie.
        "data": {"dataset": "digits", "root": str(root / "data"),
                 "val_size": settings.val_size},
        "train": {"epochs": settings.epochs, "batch_size": 64, "schedule": "cosine"},
        # The quickstart's space with width 1-2 (k=4 costs 4x the time of a trial) and the
        # learning rate over three decades, as a user who does not know it would search it:
        # adam trains at the low end, sgd at the high end, each fails at the other's.
        "space": {
            "family": ["wrn", "resnet", "preact-resnet"],
            "depth": [10, 14, 16, 20],
            "width": [1, 2],
            "dropout": {"low": 0.0, "high": 0.3},
            "lr": {"low": 0.001, "high": 1.0, "log": True},
            "optimizer": ["sgd", "nesterov", "adam"],
            "momentum": {"low": 0.8, "high": 0.95},
            "weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
        },
        # Rungs at grace_period * 2^k epochs: 2, 4 with the platform's default grace 2.
        "scheduler": {"kind": method.scheduler, "reduction_factor": 2,
                      **({"grace_period": min(method.grace_period, settings.epochs)}
                         if method.grace_period else {})},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"experiment": "search-efficiency"},
        "storage": {"path": str(root / "ray_results")},
    }


# ---------------------------------------------------------------- Tune hooks


def budget_stopper(budget: int):
    """Ends the whole study once `budget` trial-epochs have been reported."""
    from ray import tune

    class BudgetStopper(tune.Stopper):
        def __init__(self) -> None:
            self.seen: set[tuple[str, int]] = set()

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if "epoch" in result:  # a set: a repeated final result is not a new epoch
                self.seen.add((trial_id, int(result["epoch"])))
            return False

        def stop_all(self) -> bool:
            return len(self.seen) >= budget

    return BudgetStopper()


def anytime_recorder(started: float):
    """A Tune callback that records the anytime curve and scores each new pick on test."""
    from ray.tune import Callback

    from search.trial.single_run import evaluate_checkpoint

    class Recorder(Callback):
        def __init__(self) -> None:
            self.points: list[dict[str, Any]] = []
            self.seen: set[tuple[str, int]] = set()
            self.trials: dict[str, dict[str, Any]] = {}
            self.pick: tuple[float, float, int] | None = None  # (val acc, -val loss, -order)
            self.pick_key: tuple[str, int] | None = None
            self.test: dict[tuple[str, int], float] = {}
            self.pending: set[tuple[str, int]] = set()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if "epoch" not in result:
                return
            key = (trial.trial_id, int(result["epoch"]))
            if key in self.seen:
                return
            self.seen.add(key)
            val = float(result.get("val_accuracy", 0.0))
            loss = float(result.get("val_loss", math.inf))
            if not math.isfinite(loss):
                loss = math.inf
            rank = (val, -loss, -len(self.points))
            if self.pick is None or rank > self.pick:
                self.pick, self.pick_key = rank, key
                self.pending.add(key)
            self.points.append({
                "trial_epochs": len(self.seen), "wall_s": round(time.monotonic() - started, 3),
                "trial_id": trial.trial_id, "epoch": key[1], "val_accuracy": val,
                "best_val": self.pick[0], "pick": list(self.pick_key),
            })
            entry = self.trials.setdefault(trial.trial_id, {"trial_id": trial.trial_id,
                                                            **_trial_summary(trial.config)})
            entry["epochs"] = key[1]
            entry["best_val"] = max(entry.get("best_val", 0.0), val)
            entry["diverged"] = int(result.get("diverged", 0))

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
            epoch = int((trial.last_result or {}).get("epoch", -1))
            key = (trial.trial_id, epoch)
            if key in self.pending:
                self.pending.discard(key)
                # The same scoring as `resnet-search evaluate`: the checkpoint alone, test split.
                self.test[key] = evaluate_checkpoint(Path(checkpoint.path), split="test",
                                                     device="cpu")["accuracy"]

    return Recorder()


def score_from_disk(trial_dir: Path, epoch: int) -> float | None:
    """Test accuracy of a trial's checkpoint of `epoch`, found among its checkpoint folders."""
    from resnet_core.checkpoint import load_checkpoint
    from search.trial.single_run import evaluate_checkpoint

    for folder in sorted(trial_dir.glob("checkpoint_*")):
        try:
            if int(load_checkpoint(folder)["epoch"]) == epoch:
                return evaluate_checkpoint(folder, split="test", device="cpu")["accuracy"]
        except (OSError, ValueError):  # half-written or removed meanwhile: keep looking
            continue
    return None


def _trial_summary(config: dict[str, Any]) -> dict[str, Any]:
    model, train = config.get("model", {}), config.get("train", {})
    return {"number": config.get("optuna_trial_number"), "family": model.get("family"),
            "depth": model.get("depth"), "width": model.get("width"),
            "dropout": model.get("dropout"), "optimizer": train.get("optimizer"),
            "lr": train.get("lr"), "weight_decay": train.get("weight_decay")}


# ---------------------------------------------------------------- one study


def build_tuner(config, method: Method, budget: int, callbacks: list):
    """The Tuner as `search.study.run.build_tuner` assembles it, plus the budget stopper."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search.space.searcher import build_searcher
    from search.study.resources import wrap_trainable
    from search.study.run import trial_name

    if method.sampler == "gp":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from search.space.sampler import SearchSpace

        # GP models the parameters every trial has (family, lr, optimizer, ...);
        # conditional ones (depth per family, width, momentum) are sampled at random.
        searcher = OptunaSearch(SearchSpace(config), metric=config.study.metric,
                                mode=config.study.mode,
                                sampler=optuna.samplers.GPSampler(seed=config.study.seed))
    else:
        searcher = build_searcher(config)
    scheduler = None
    if config.scheduler.kind == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=config.train.epochs,
                                  grace_period=config.scheduler.grace_period,
                                  reduction_factor=config.scheduler.reduction_factor)
    run_config = tune.RunConfig(
        name=config.study.name, storage_path=config.storage.path,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=config.study.metric,
            checkpoint_score_order=config.study.mode),
        failure_config=tune.FailureConfig(max_failures=3),
        callbacks=callbacks, stop=budget_stopper(budget), verbose=0,
    )
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=config.study.num_samples,
        metric=config.study.metric, mode=config.study.mode,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        # One process per trial costs seconds of start-up (imports, data) per trial on a
        # busy 2-core machine, far more than a digits epoch: keep the processes.
        reuse_actors=True,
    )
    return tune.Tuner(wrap_trainable(config), tune_config=tune_config, run_config=run_config)


def run_method(method: Method, seed: int, settings: Settings, root: Path, uri: str
               ) -> dict[str, Any]:
    from search.space.sampler import describe_space
    from search.study.run import absolute_paths, trial_callback
    from search.studyfile.config import parse_study
    from search.tracking import store

    raw = study_file(method, seed, settings, root)
    config = absolute_paths(parse_study(raw, label=f"{method.name} seed {seed}"))
    budget = settings.trials * settings.epochs
    client = store.client_for(uri)
    experiment_id = store.get_or_create_experiment(
        client, config.tracking.experiment, (root / "mlartifacts").as_uri())
    study_run_id = store.create_study_run(client, experiment_id, config, config.storage.path,
                                             describe_space(config))
    mlflow_callback = trial_callback(config, uri, study_run_id, experiment_id)
    started = time.monotonic()
    recorder = anytime_recorder(started)
    build_tuner(config, method, budget, [mlflow_callback, recorder]).fit()
    wall = time.monotonic() - started
    client.set_tag(study_run_id, "status", "completed")  # as a finished study has it
    client.set_terminated(study_run_id, "FINISHED")

    points = recorder.points
    study_dir = Path(config.storage.path) / config.study.name
    for key in {tuple(p["pick"]) for p in points} - set(recorder.test):
        # Stopping at the budget drops saves Tune had not processed yet; the files are there.
        recorder.test[key] = score_from_disk(study_dir / f"trial_{key[0]}", key[1])
    for point in points:
        point["selected_test"] = recorder.test.get(tuple(point.pop("pick")))
    unscored = sum(p["selected_test"] is None for p in points)
    final = [p for p in points if p["trial_epochs"] <= budget][-1]
    trials = list(recorder.trials.values())
    print(f"  {method.name:12s} seed {seed}: {len(trials):3d} trials, "
          f"{len(points):4d} trial-epochs, best val {final['best_val']:.4f}, "
          f"test {final['selected_test']}, {wall:5.1f} s", file=sys.stderr)
    return {
        "method": method.name, "seed": seed, "budget": budget, "wall_s": round(wall, 2),
        "val_size": settings.val_size,
        "trial_epochs": len(points), "trials": trials, "curve": points,
        "final_best_val": final["best_val"], "final_test": final["selected_test"],
        "unscored_points": unscored,
    }


# ---------------------------------------------------------------- summary


def reach(curve: list[dict[str, Any]], target: float, key: str) -> float:
    """Trial-epochs (or seconds) at which best-so-far first reaches target; inf if never."""
    for point in curve:
        if point["best_val"] >= target - 1e-12:
            return float(point[key])
    return math.inf


def median(values: list[float]) -> float:
    return statistics.median(sorted(values))  # inf sorts last, so it counts as "never"


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    by_method = {m: [r for r in runs if r["method"] == m] for m in methods}
    baseline = by_method.get("random") or runs
    target = median([r["final_best_val"] for r in baseline])
    base_epochs = median([reach(r["curve"], target, "trial_epochs") for r in baseline])
    # One validation image is 1/val_size: a second target two images lower is robust to
    # the luck of one image at the top.
    near = target - NEAR_TARGET_IMAGES / runs[0]["val_size"]
    base_near = median([reach(r["curve"], near, "trial_epochs") for r in baseline])
    summary: dict[str, Any] = {"target_best_val": target, "random_trial_epochs": base_epochs,
                               "near_target_best_val": near,
                               "random_trial_epochs_near": base_near, "methods": {}}
    for name, group in by_method.items():
        epochs = [reach(r["curve"], target, "trial_epochs") for r in group]
        near_epochs = [reach(r["curve"], near, "trial_epochs") for r in group]
        seconds = [reach(r["curve"], target, "wall_s") for r in group]
        test_mean, test_std = mean_std([r["final_test"] for r in group])
        val_mean, val_std = mean_std([r["final_best_val"] for r in group])
        need = median(epochs)
        summary["methods"][name] = {
            "seeds": len(group),
            "reach_trial_epochs": [_finite(e) for e in epochs],
            "median_reach_trial_epochs": _finite(need),
            "ratio_to_random": _finite(need / base_epochs) if base_epochs else None,
            "median_reach_wall_s": _finite(median(seconds)),
            "seeds_reaching_target": sum(math.isfinite(e) for e in epochs),
            "median_reach_trial_epochs_near": _finite(median(near_epochs)),
            "ratio_to_random_near": (_finite(median(near_epochs) / base_near)
                                     if base_near else None),
            "final_best_val_mean": val_mean, "final_best_val_std": val_std,
            "final_test_mean": test_mean, "final_test_std": test_std,
            "trials_mean": statistics.fmean(len(r["trials"]) for r in group),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in group),
        }
    return summary


def diagnostics(runs: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Why early stopping helps or not: how well an early epoch predicts a trial's final score.

    From the runs without early stopping (every trial ran every epoch): the Spearman rank
    correlation between val accuracy at epoch k and the trial's best val accuracy, and
    the mean val accuracy at epoch k. From the ASHA runs: where trials were stopped.
    """
    from scipy.stats import spearmanr

    full = [r for r in runs if r["method"] in ("random", "tpe")]
    by_trial: dict[tuple[str, int, str], dict[int, float]] = {}
    for run in full:
        for point in run["curve"]:
            key = (run["method"], run["seed"], point["trial_id"])
            by_trial.setdefault(key, {})[point["epoch"]] = point["val_accuracy"]
    complete = [v for v in by_trial.values() if len(v) == epochs]
    signal = {}
    for k in sorted({1, 2, 4, epochs // 2} & set(range(1, epochs))):
        early = [v[k] for v in complete]
        final = [max(v.values()) for v in complete]
        rho = spearmanr(early, final).statistic if len(complete) > 2 else math.nan
        signal[str(k)] = {"spearman_with_final": round(float(rho), 3),
                          "mean_val": round(statistics.fmean(early), 4) if early else None,
                          "trials": len(early)}
    stopped: dict[str, dict[str, float]] = {}
    for name in sorted({r["method"] for r in runs if "asha" in r["method"]}):
        trials = [t for r in runs if r["method"] == name for t in r["trials"]]
        counts: dict[str, int] = {}
        for trial in trials:
            counts[str(trial["epochs"])] = counts.get(str(trial["epochs"]), 0) + 1
        stopped[name] = {k: round(v / len(trials), 3) for k, v in sorted(counts.items(),
                                                                         key=lambda i: int(i[0]))}
    return {"early_epoch_signal": signal, "share_of_trials_by_epochs_run": stopped,
            "later_trials": later_trials(runs, epochs)}


def later_trials(runs: list[dict[str, Any]], epochs: int) -> dict[str, dict[str, float]]:
    """Does the sampler learn? The trials after TPE's random start-up, per method.

    TPE samples at random until n_startup_trials trials have *finished* (5 in the
    16-trial studies, 10 with ASHA's num_samples 96), and with two trials running and
    two pending the last random proposals come later: in every seed the first 8 (13
    with ASHA) trials of TPE were those of random search. The cut is there, for random
    search too, so that both sides compare the same trial numbers.
    """
    out = {}
    for name in sorted({r["method"] for r in runs}):
        asha = "asha" in name
        start = 13 if asha else 8
        later = [t for r in runs if r["method"] == name for t in r["trials"]
                 if (t["number"] or 0) >= start]
        if not later:
            continue
        entry = {"from_trial": start, "trials": len(later),
                 "share_best_val_at_least_0.95": round(
                     sum(t["best_val"] >= 0.95 for t in later) / len(later), 3)}
        if asha:
            from search.studyfile.config import DEFAULT_GRACE_PERIOD

            first_rung = next((m.grace_period for m in METHODS if m.name == name), None) \
                or DEFAULT_GRACE_PERIOD
            entry["share_stopped_at_first_rung"] = round(
                sum(t["epochs"] == first_rung for t in later) / len(later), 3)
            entry["share_completed"] = round(
                sum(t["epochs"] == epochs for t in later) / len(later), 3)
        else:
            entry["mean_best_val"] = round(statistics.fmean(t["best_val"] for t in later), 4)
        out[name] = entry
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no infinity


def print_table(summary: dict[str, Any]) -> None:
    print(f"target: random's final median best val accuracy {summary['target_best_val']:.4f}, "
          f"reached by random after {summary['random_trial_epochs']} trial-epochs (median)")
    print(f"near target (two val images lower): {summary['near_target_best_val']:.4f}")
    print("| method | trial-epochs to target (median) | ratio to random | seeds reaching | "
          "ratio, near target | final best val | final test (selected) | trials | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in summary["methods"].items():
        need = m["median_reach_trial_epochs"]
        ratio, near = m["ratio_to_random"], m["ratio_to_random_near"]
        print(f"| {name} | {need if need is not None else 'never'} | "
              f"{f'{ratio:.2f}x' if ratio is not None else '-'} | "
              f"{m['seeds_reaching_target']}/{m['seeds']} | "
              f"{f'{near:.2f}x' if near is not None else '-'} | "
              f"{m['final_best_val_mean']:.4f} +- {m['final_best_val_std']:.4f} | "
              f"{m['final_test_mean']:.4f} +- {m['final_test_std']:.4f} | "
              f"{m['trials_mean']:.1f} | {m['wall_s_mean']:.0f} |")


def plot(runs: list[dict[str, Any]], methods: list[str], summary: dict[str, Any], path: Path
         ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    warnings.simplefilter("ignore", RuntimeWarning)  # NaN before a run's first epoch is expected
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for column, key in enumerate(("trial_epochs", "wall_s")):
        end = max(p[key] for r in runs for p in r["curve"])
        grid = np.linspace(0, end, 200)
        for index, name in enumerate(methods):
            group = [r for r in runs if r["method"] == name]
            for row, metric in enumerate(("best_val", "selected_test")):
                values = np.array([_step(r["curve"], key, metric, grid) for r in group])
                color = f"C{index}"
                axes[row][column].plot(grid, np.nanmedian(values, axis=0), color=color,
                                       label=name)
                axes[row][column].fill_between(grid, np.nanmin(values, axis=0),
                                               np.nanmax(values, axis=0), color=color,
                                               alpha=0.12)
        for row, label in enumerate(("best validation accuracy so far",
                                     "test accuracy of the selected trial")):
            axis = axes[row][column]
            axis.set_xlabel("cumulative trial-epochs" if key == "trial_epochs"
                            else "wall time (s, shared CPU: noisy)")
            axis.set_ylabel(label)
            axis.set_ylim(0.9, 1.0)
            axis.grid(alpha=0.3)
        axes[0][column].axhline(summary["target_best_val"], color="k", lw=0.8, ls="--")
    axes[0][0].legend(loc="lower right")
    seeds = max(len([r for r in runs if r["method"] == m]) for m in methods)
    fig.suptitle(f"Search efficiency on digits: median over {seeds} seeds, band = min..max; "
                 f"dashed = random's final median")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _step(curve, key: str, metric: str, grid) -> list[float]:
    """The best-so-far step function on a grid (NaN before the first point)."""
    out, i, last = [], 0, math.nan
    for x in grid:
        while i < len(curve) and curve[i][key] <= x:
            value = curve[i][metric]
            last = value if value is not None else last
            i += 1
        out.append(last)
    return out


# ---------------------------------------------------------------- machine and main


def write_json(path: Path | None, runs: list[dict[str, Any]], methods: list[str],
               settings: Settings, info: dict[str, Any], started: float) -> dict[str, Any]:
    done = [m for m in methods if any(r["method"] == m for r in runs)]
    result = {"settings": {**settings.__dict__, "budget": settings.trials * settings.epochs,
                           "methods": methods,
                           "space": study_file(METHODS[0], 0, settings, Path("."))["space"]},
              "machine": info, "total_wall_s": round(time.monotonic() - started, 1),
              "summary": summarize(runs, done),
              "diagnostics": diagnostics(runs, settings.epochs), "runs": runs}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def redo(path: Path, plot_path: Path) -> int:
    """Summary, diagnostics and plot again from the raw runs (no training)."""
    result = json.loads(path.read_text())
    runs, methods = result["runs"], result["settings"]["methods"]
    done = [m for m in methods if any(r["method"] == m for r in runs)]
    result["summary"] = summarize(runs, done)
    result["diagnostics"] = diagnostics(runs, result["settings"]["epochs"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result["summary"])
    plot(runs, done, result["summary"], plot_path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 3 trials x 2 epochs")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 5; quick: 1)")
    parser.add_argument("--methods", nargs="+", choices=[m.name for m in METHODS],
                        default=list(DEFAULT_METHODS))
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where the raw results go (default {RESULTS.relative_to(HERE.parent)})")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the anytime curves")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="recompute the summary and plot of an earlier run's JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        return redo(args.from_json, args.plot or PLOT)
    settings = QUICK if args.quick else FULL
    if args.seeds:
        settings = replace(settings, seeds=tuple(range(args.seeds)))
    json_path = args.json or (RESULTS if not args.quick else None)
    plot_path = args.plot or (PLOT if not args.quick else None)

    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as scratch:
        root = Path(scratch)
        # A throwaway home: MLflow runs and Ray results never reach the user's stores.
        os.environ["RESNET_SEARCH_HOME"] = str(root)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["RESNET_SEARCH_QUIET"] = "1"
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        # Tune keeps one trial pending at a time for Optuna searchers; let both cores start.
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(os.cpu_count() or 1))
        import ray
        import torch

        torch.set_num_threads(1)  # the driver's test scoring must not steal the trials' cores
        uri = f"sqlite:///{root / 'mlflow.db'}"
        info = machine()
        # address="local": a private Ray, never a cluster someone started on this machine.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}})
        started = time.monotonic()
        runs: list[dict[str, Any]] = []
        try:
            # Seeds outermost: a change of background load hits every method alike.
            for seed in settings.seeds:
                for name in args.methods:
                    method = next(m for m in METHODS if m.name == name)
                    runs.append(run_method(method, seed, settings, root, uri))
                    if json_path:  # after every study: a stopped run keeps what it measured
                        write_json(json_path, runs, args.methods, settings, info, started)
        finally:
            ray.shutdown()
    info["loadavg_end"] = os.getloadavg()
    result = write_json(json_path, runs, args.methods, settings, info, started)
    print_table(result["summary"])
    if json_path:
        print(f"raw results: {json_path}", file=sys.stderr)
    if plot_path:
        plot(runs, args.methods, result["summary"], plot_path)
        print(f"plot: {plot_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
