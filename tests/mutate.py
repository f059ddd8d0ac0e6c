"""Does the suite have teeth? Apply deliberate bugs one at a time and check that tests fail.

    make mutate                      # all mutations (~25 min on 2 cores)
    .venv/bin/python tests/mutate.py --only ranking val-overlap
    .venv/bin/python tests/mutate.py --commit HEAD   # the last commit, without uncommitted edits

Each mutation replaces one exact piece of source (it must occur exactly once) in a scratch
copy of the working tree, never in the checkout itself: others may be editing or testing it
meanwhile. Its tests run twice there, on the unmutated code (the baseline: they must all
pass, none skipped) and on the mutated code. A mutation is caught only when the mutated run
exits 1 with at least one of its tests among the failures (read from pytest's JUnit XML).
Anything else says nothing about the bug and is reported as "not tested": no test selected
(exit 5), a collection or set-up error, a skip, a service that did not answer (the baseline
fails), a timeout. A mutation not caught, tested or not, makes the script exit 1; the table
is printed whatever happens, Ctrl-C included. The last run's output is in tests/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: the tests that must catch it


MUTATIONS = (
    Mutation("ddp-slicing", "DDP ranks all train on the whole split (no rank/world_size slicing)",
             "resnet_core/train.py", "rank=rank, world_size=world_size,", "rank=0, world_size=1,",
             ("tests/search/trial/test_distributed.py", "-k", "shares")),
    Mutation("ddp-seed", "each DDP worker seeds its loader with seed + rank (the shares overlap)",
             "resnet_core/train.py", "self.generator = torch.Generator().manual_seed(train_config.seed)",
             "self.generator = torch.Generator().manual_seed(train_config.seed + rank)",
             ("tests/search/trial/test_distributed.py", "-k", "shares")),
    Mutation("ddp-split", "rank 0 takes every other image, the others a contiguous block",
             "resnet_core/loader.py",
             "order = order[self.rank : per_rank * self.world_size : self.world_size]",
             "order = (order[self.rank * per_rank : (self.rank + 1) * per_rank] if self.rank\n"
             "                     else order[: per_rank * self.world_size : self.world_size])",
             ("tests/search/trial/test_distributed.py", "-k", "shares")),
    Mutation("val-overlap", "the validation split is drawn from the training images",
             "resnet_core/data.py", "val_idx, train_idx = order[:val_size], order[val_size:]",
             "val_idx, train_idx = order[-val_size:], order[val_size:]",
             ("tests/resnet_core/test_data.py", "-k", "cifar10_validation")),
    Mutation("ranking", "the ranking is reversed (the worst trial wins)",
             "search/tracking/ranking.py", 'return (-value if mode == "max" else value, val_loss)',
             'return (value if mode == "max" else -value, val_loss)',
             ("tests/search/tracking/test_ranking.py",)),
    Mutation("tie-break", "ties go to the higher validation loss",
             "search/tracking/ranking.py", "else value, val_loss)", "else value, -val_loss)",
             ("tests/search/tracking/test_ranking.py", "-k", "then_lower_loss")),
    Mutation("test-split", "the champion is scored on the validation split, not the test split",
             "search/study/champion.py", 'split="test", device="cpu", source=source',
             'split="val", device="cpu", source=source',
             ("tests/search/end_to_end/test_study.py", "-k", "load_best")),
    Mutation("tracking-uri", "[tracking] uri of the study file is ignored",
             "search/study/run.py", "store.resolve_tracking_uri(tracking_uri, config.tracking.uri)",
             "store.resolve_tracking_uri(tracking_uri, None)",
             ("tests/search/end_to_end/test_study.py", "-k", "tracking_uri_of_the_study_file")),
    Mutation("resume-searcher", "resume starts a fresh Tuner (the searcher and trials are not restored)",
             "search/study/run.py", "tuner = build_tuner(config, callback, cluster.capacity, restore=True)",
             "tuner = build_tuner(config, callback, cluster.capacity)",
             ("tests/search/end_to_end/test_study.py", "-k", "killed_driver")),
    Mutation("asha-off", "the ASHA scheduler is never used (no trial is stopped early)",
             "search/study/run.py", "scheduler=asha_scheduler(config),", "scheduler=None,",
             ("tests/search/end_to_end/test_study.py", "-k", "asha_stops")),
    Mutation("depth-rules", "the basic and bottleneck depth rules are swapped",
             "resnet_core/families.py",
             '(DepthRule("basic", 6, 2), DepthRule("bottleneck", 9, 2))',
             '(DepthRule("basic", 9, 2), DepthRule("bottleneck", 6, 2))',
             ("tests/resnet_core/test_depth_rules.py",)),
    Mutation("weights-only", "checkpoints load with weights_only=False (a file can run code)",
             "resnet_core/checkpoint.py", "weights_only=True)\n", "weights_only=False)\n",
             ("tests/resnet_core/test_checkpoint.py", "-k", "runs_no_code")),
    Mutation("retries", "a trial whose process dies is retried 4 times, not 3",
             "search/studyfile/config.py", "    max_failures: int = 3\n",
             "    max_failures: int = 4\n",
             ("tests/search/end_to_end/test_study.py", "-k", "retried_from_its_checkpoint")),
    Mutation("constraints-off", "networks over a [constraints] limit are trained like any other",
             "search/space/sampler.py", "if any(v > 0 for v in violations):", "if False:",
             ("tests/search/study/test_constraints.py", "-k", "rejected_at_sampling")),
    Mutation("latency-limit", "max_latency_ms is looked up under the study file's key, never found",
             "search/trial/trainable.py",
             'feasible = "latency_ms" not in limits or latency <= limits["latency_ms"]',
             'feasible = "max_latency_ms" not in limits or latency <= limits["max_latency_ms"]',
             ("tests/search/study/test_constraints.py", "-k", "latency")),
    Mutation("tracking-queue", "the trial callback writes to MLflow in the Tune loop (no queue)",
             "search/tracking/writer.py",
             '        journal first, so that the write survives this process."""\n',
             '        journal first, so that the write survives this process."""\n'
             '        return job()\n',
             ("tests/search/tracking/test_tracking_server.py", "-k", "outage")),
    Mutation("tracking-drop", "the tracking writer drops an update the store refused while away",
             "search/tracking/writer.py",
             "                delay = min(2 * delay, MAX_RETRY_DELAY_S)\n                continue\n",
             "                delay = min(2 * delay, MAX_RETRY_DELAY_S)\n                return\n",
             ("tests/search/tracking/test_tracking_writer.py",)),
)


@dataclass
class Outcome:
    """One pytest run: "passed", "failed" (tests failed) or "not tested" (and why)."""

    result: str
    seconds: float
    failed: list[str] = field(default_factory=list)
    why: str = ""


def scratch_tree(destination: Path, commit: str | None = None) -> Path:
    """A copy of the working tree as git sees it (tracked and new files, edits included),
    or of one commit's files."""
    tree = destination / "tree"
    if commit:
        tree.mkdir()
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    else:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode()
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, tree / name)
    # The same venv: cluster/local.sh runs the tree's .venv/bin/ray.
    if (ROOT / ".venv").is_dir():
        (tree / ".venv").symlink_to(ROOT / ".venv")
    return tree


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> Outcome:
    junit = tree / "mutate-junit.xml"
    junit.unlink(missing_ok=True)
    start = time.perf_counter()
    # PYTHONPATH puts the scratch copy ahead of the editable install of the checkout, for
    # pytest, the commands the tests start and the Ray workers (they inherit it).
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-x", "-q", "-rfEs", "-p", "no:cacheprovider",
         f"--junitxml={junit}", *tests],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        return Outcome("not tested", time.perf_counter() - start, why=f"timed out after {timeout:.0f} s")
    except KeyboardInterrupt:
        stop(process)
        raise
    seconds = time.perf_counter() - start
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    if not junit.is_file():
        return Outcome("not tested", seconds, why=f"exit {process.returncode}, no report: {last}")
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    failed, errors, skipped, count, first_failure = [], [], [], 0, ""
    for case in cases:
        count += 1
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name', '')}"
        if case.find("failure") is not None:
            failed.append(name)
            message = (case.find("failure").get("message") or "").strip()
            if message and not first_failure:
                first_failure = message.splitlines()[0][:200]
        if case.find("error") is not None:
            errors.append(name)
        if case.find("skipped") is not None:
            skipped.append(name)
    if process.returncode == 5 or count == 0:
        return Outcome("not tested", seconds, why="no test selected")
    if errors:
        return Outcome("not tested", seconds, why=f"error outside a test's body: {errors[0]}: {last}")
    if skipped:
        return Outcome("not tested", seconds, why=f"{len(skipped)} skipped: {last}")
    if process.returncode == 0 and not failed:
        return Outcome("passed", seconds, why=last)
    if process.returncode == 1 and failed:
        return Outcome("failed", seconds, failed, why=f"{last}; {first_failure}")
    return Outcome("not tested", seconds, why=f"exit {process.returncode}: {last}")


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C pytest (its fixtures stop the Ray and servers they started), then kill what is left."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    except ProcessLookupError:
        pass


def try_mutation(tree: Path, mutation: Mutation, baselines: dict, timeout: float) -> tuple[str, str, float]:
    """(result, detail, seconds): result is "caught", "MISSED" or "not tested"."""
    path = tree / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return ("not tested", f"the text to mutate occurs {original.count(mutation.old)} times in "
                f"{mutation.path} (expected once): update tests/mutate.py", 0.0)
    shared = mutation.tests in baselines  # run once for every mutation with these tests
    if not shared:
        baselines[mutation.tests] = run_tests(tree, mutation.tests, timeout)
    baseline = baselines[mutation.tests]
    baseline_seconds = 0.0 if shared else baseline.seconds
    if baseline.result != "passed":
        why = (baseline.why if baseline.result == "not tested"
               else f"failed: {', '.join(baseline.failed)} ({baseline.why})")
        return "not tested", f"baseline (unmutated) {why}", baseline_seconds
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        mutated = run_tests(tree, mutation.tests, timeout)
    finally:
        path.write_text(original)
    seconds = baseline_seconds + mutated.seconds
    if mutated.result == "failed":
        return "caught", f"{', '.join(mutated.failed)} ({mutated.why.split('; ')[0]})", seconds
    if mutated.result == "passed":
        return "MISSED", f"every test passed ({mutated.why})", seconds
    return "not tested", f"mutated run: {mutated.why}", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apply deliberate bugs and check the tests fail")
    parser.add_argument("--only", nargs="*", choices=[m.name for m in MUTATIONS])
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    parser.add_argument("--commit", help="mutate this commit's files (default: the working tree)")
    args = parser.parse_args(argv)
    # Ctrl-C and a plain kill both stop the tests in flight and still print the table (a shell
    # starts background jobs with SIGINT ignored: set it back).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    rows: dict[str, tuple[str, str, float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resnet-search-mutate-") as scratch:
        tree = scratch_tree(Path(scratch), args.commit)
        baselines: dict = {}
        try:
            for mutation in chosen:
                rows[mutation.name] = try_mutation(tree, mutation, baselines, args.timeout)
                result, detail, seconds = rows[mutation.name]
                print(f"{mutation.name}: {result} in {seconds:.0f} s: {detail}", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            print_table(chosen, rows, time.perf_counter() - start)
    return 0 if all(rows.get(m.name, ("",))[0] == "caught" for m in chosen) else 1


def print_table(chosen: list[Mutation], rows: dict, total: float) -> None:
    # seconds: the baseline (run once per set of tests) and the mutated run
    print(f"\n{'mutation':<16} {'result':<10} {'seconds':>7}  what failed, or why it is not tested")
    for mutation in chosen:
        result, detail, seconds = rows.get(mutation.name, ("not tested", "not run", 0.0))
        print(f"{mutation.name:<16} {result:<10} {seconds:>7.0f}  {detail}")
    caught = sum(rows.get(m.name, ("",))[0] == "caught" for m in chosen)
    print(f"{caught} of {len(chosen)} caught in {total / 60:.0f} min", flush=True)
    for mutation in chosen:
        if rows.get(mutation.name, ("",))[0] != "caught":
            print(f"NOT CAUGHT: {mutation.name}: {mutation.what} ({' '.join(mutation.tests)})")


if __name__ == "__main__":
    sys.exit(main())
