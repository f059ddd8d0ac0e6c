"""The chaos loop's parts: a seeded plan of kills across a study's life, the kills themselves
and what a study must be after them (tests/search/end_to_end/test_chaos.py, test_node_loss.py).

Every random choice comes from one seed, RESNET_SEARCH_CHAOS_SEED (a fresh one when unset),
printed with the plan and in every assertion message: `RESNET_SEARCH_CHAOS_SEED=S make chaos
N=1` replays the same plan (the moments a timed kill lands still depend on the machine's speed).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import start_cli
from study_helpers import Studies, kill_session, session_processes, wait_for

from search.tracking import tags

SEED_ENV = "RESNET_SEARCH_CHAOS_SEED"
FAULT_ENV = "RESNET_SEARCH_FAULT_POINT"  # search/fault_points.py
FULL_ENV = "RESNET_SEARCH_CHAOS_FULL"


def chaos_seed() -> int:
    return int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1, 10**6))


@dataclass(frozen=True)
class Kill:
    """One kill: the phase it is meant to hit, how it is triggered, and its seeded numbers.

    how: `epoch` (`at` new epochs in MLflow since the command started, then `delay` s), `started`
    (`delay` s after the command started), `resuming` (the driver said `resuming study`, then
    `delay` s), `new_checkpoint` (a checkpoint folder appeared in storage, then `delay` s),
    `fault` (RESNET_SEARCH_FAULT_POINT=`point`: the driver's session kills itself there)."""

    phase: str
    how: str
    at: int = 0
    delay: float = 0.0
    point: str = ""

    def __str__(self) -> str:
        if self.how == "fault":
            return f"{self.phase}: fault point {self.point}"
        trigger = {"epoch": f"{self.at} new epoch(s) in MLflow", "started": "command started",
                   "resuming": "'resuming study' said", "new_checkpoint": "new checkpoint folder"}
        return f"{self.phase}: {trigger[self.how]} + {self.delay:.2f} s"


def kill_plan(seed: int, full: bool) -> list[Kill]:
    """The kills of one loop, in order: the first hits `run`, every later one a `resume`.

    Each phase at least once and `resume` killed twice in a row, at seeded moments. `full`
    (make chaos) adds a kill once `resume` has restored Ray's state, one as a checkpoint
    folder appears in storage, and kills the champion's export and its registration apart;
    CI's plan (7 kills) picks one of those two."""
    rng = random.Random(seed)
    trials = Kill("trials running", "epoch", at=rng.randint(1, 2), delay=rng.uniform(0, 1.5))
    # From the imports through the journal's replay and Ray's start to the restore.
    twice = [Kill("inside resume", "started", delay=rng.uniform(3, 15)),
             Kill("inside resume", "resuming", delay=rng.uniform(0, 2)) if full
             else Kill("inside resume", "started", delay=rng.uniform(3, 15))]
    in_trials = [Kill("checkpoint written", "fault", point=f"checkpoint:{rng.randint(1, 3)}")]
    champion = [Kill("champion export", "fault", point="champion_export"),
                Kill("champion registration", "fault", point="champion_register")]
    if full:
        in_trials.append(Kill("checkpoint written", "new_checkpoint", delay=rng.uniform(0, 0.05)))
        in_trials.append(Kill("trials running", "epoch", at=rng.randint(2, 5),
                              delay=rng.uniform(0, 1.5)))
        rng.shuffle(in_trials)
    else:
        champion = [rng.choice(champion)]
    return [trials, *twice, *in_trials, *champion, Kill("study summary", "fault", point="summary"),
            Kill("report", "fault", point="report")]


def full_loop() -> bool:
    """`make chaos` runs the full plan on the larger study; CI the short one."""
    return os.environ.get(FULL_ENV, "") == "1"


@dataclass
class Loop:
    """The drivers of one study, each in its own session: started, killed, logged."""

    studies: Studies
    name: str
    seed: int
    storage: Path
    done: list[str] = field(default_factory=list)  # what each command met, for the messages
    sessions: list[int] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # each command's start, end

    def context(self) -> str:
        return (f"chaos seed {self.seed} (replay: {SEED_ENV}={self.seed} make chaos N=1); "
                f"kills: " + "; ".join(self.done))

    def start(self, command: str, fault: str = "") -> subprocess.Popen:
        args = ("run", str(self.studies.home.parent / f"{self.name}.toml")) \
            if command == "run" else ("resume", self.name)
        env = {**self.studies.env, FAULT_ENV: fault} if fault else self.studies.env
        log = open(self.log_path(), "a")  # noqa: SIM115 - closed with the process
        log.write(f"\n===== {command} {fault}\n")
        log.flush()
        driver = start_cli(*args, cwd=self.studies.home.parent, full_env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
        self.sessions.append(driver.pid)
        return driver

    def log_path(self) -> Path:
        return self.studies.home.parent / f"chaos-{self.name}.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path().read_text()[-chars:]

    def kill(self, kill: Kill, command: str) -> None:
        """Start `command`, kill it as `kill` says; record what happened."""
        started = time.time()
        driver = self.start(command, kill.point if kill.how == "fault" else "")
        try:
            if kill.how == "fault":
                code = driver.wait(timeout=600)
            else:
                self.trigger(kill, driver, started)
                code = driver.poll()
        finally:
            kill_session(driver)
        self.spans.append((started, time.time()))
        ended = "killed" if code is None or code == -9 else f"exited {code} before the kill"
        self.done.append(f"{command} [{kill}] {ended} after {time.time() - started:.1f} s")
        print(f"chaos: {self.done[-1]}", flush=True)

    def trigger(self, kill: Kill, driver: subprocess.Popen, started: float) -> None:
        """Wait for the kill's event (or the driver's end), then its delay."""
        def alive_and(condition):
            return lambda: driver.poll() is not None or condition()

        if kill.how == "epoch":
            before = self.epochs_in_mlflow()
            wait_for(alive_and(lambda: self.epochs_in_mlflow() >= before + kill.at),
                     600, f"{kill.at} new epochs", interval=0.3)
        elif kill.how == "resuming":
            wait_for(alive_and(lambda: "resuming study" in self.log_path().read_text()),
                     600, "resuming study", interval=0.1)
        elif kill.how == "new_checkpoint":
            before = set(self.checkpoints())
            wait_for(alive_and(lambda: set(self.checkpoints()) - before), 600,
                     "a new checkpoint folder", interval=0.02)
        time.sleep(max(0.0, kill.delay - (time.time() - started if kill.how == "started" else 0)))

    def epochs_in_mlflow(self) -> int:
        """The epochs the study's trial runs hold (a redone epoch is not logged again)."""
        return sum(int(r.data.metrics.get("epoch", 0)) for r in self.studies.trial_runs(self.name))

    def checkpoints(self) -> list[Path]:
        return list((self.storage / self.name).glob("trial_*/checkpoint_*"))

    def finish(self) -> float:
        """`resume` until it exits 0; its wall time."""
        started = time.time()
        driver = self.start("resume")
        try:
            code = driver.wait(timeout=900)
        finally:
            kill_session(driver)
        self.spans.append((started, time.time()))
        assert code == 0, f"{self.context()}\nthe last resume exited {code}:\n{self.log_tail()}"
        return time.time() - started

    def seconds_to_first_epoch(self) -> list[float]:
        """For each resume that trained: its start to the first epoch it reported (MLflow's
        report times), Ray's start and the restore included."""
        client = self.studies.client()
        stamps = sorted(m.timestamp / 1000 for r in self.studies.trial_runs(self.name)
                        for m in client.get_metric_history(r.info.run_id, "epoch"))
        seconds = []
        for start, end in self.spans[1:]:
            first = next((t for t in stamps if start < t <= end), None)
            if first is not None:
                seconds.append(first - start)
        return seconds

    def leftovers(self) -> dict[int, list[int]]:
        return {s: session_processes(s) for s in self.sessions if session_processes(s)}


def last_epochs_in_ray(storage: Path, name: str) -> dict[str, int]:
    """Trial id -> the last epoch Tune recorded for it (its result.json, redone epochs and all)."""
    import json

    last = {}
    for results in (storage / name).glob("trial_*/result.json"):
        epochs = [json.loads(line).get("epoch", 0) for line in results.read_text().splitlines()
                  if line.strip()]
        trial = results.parent.name.removeprefix("trial_")
        last[trial] = int(max(epochs, default=0))
    return last


def assert_study_whole(studies: Studies, name: str, num_samples: int, storage: Path,
                       context: str) -> dict:
    """What a study must be after any number of kills and resumes; returns its status."""
    from search.results.retrieve import load_best, study_status

    runs = studies.trial_runs(name)
    ids = Counter(r.data.tags.get(tags.TRIAL_ID) for r in runs)
    assert len(runs) == num_samples and len(ids) == num_samples, f"{context}\ntrial runs {ids}"
    numbers = sorted(int(r.data.tags[tags.OPTUNA_NUMBER]) for r in runs)
    assert numbers == list(range(num_samples)), f"{context}\nOptuna numbers {numbers}"
    client, in_ray = studies.client(), last_epochs_in_ray(storage, name)
    for run in runs:
        trial, status = run.data.tags[tags.TRIAL_ID], run.data.tags.get(tags.STATUS)
        assert status in tags.FINAL_STATUSES, f"{context}\ntrial {trial} is {status}"
        for metric in ("epoch", "val_accuracy"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
            assert steps == list(range(1, in_ray[trial] + 1)), (
                f"{context}\ntrial {trial} ({status}): {metric} steps {steps}, "
                f"Tune recorded epochs 1..{in_ray[trial]}")
    status = study_status(name, studies.tracking_uri)
    assert status["status"] == tags.COMPLETED, f"{context}\nstatus {status['status']}"
    model = status["registered_model"]
    versions = client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1, f"{context}\n{len(versions)} versions of {model}"
    best = status["best"]["trial_id"]
    assert versions[0].tags["trial_id"] == best == status["champion_trial_id"], (
        f"{context}\nchampion {versions[0].tags['trial_id']}, ranking's best {best}")
    _, loaded = load_best(name, studies.tracking_uri)
    assert loaded["model_uri"].endswith(f"/{versions[0].version}"), f"{context}\n{loaded}"
    return status


def redone_epochs(storage: Path, name: str) -> int:
    """Epochs Tune recorded more than once (a trial that went on from an older checkpoint)."""
    import json

    redone = 0
    for results in (storage / name).glob("trial_*/result.json"):
        epochs = [json.loads(line).get("epoch") for line in results.read_text().splitlines()
                  if line.strip()]
        redone += len(epochs) - len(set(epochs))
    return redone
