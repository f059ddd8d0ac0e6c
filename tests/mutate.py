"""Does the suite have teeth? Apply deliberate bugs one at a time and check that tests fail.

    make mutate                      # all mutations (a few studies: ~6 min on 2 cores)
    .venv/bin/python tests/mutate.py --only ranking

Each mutation replaces one exact piece of source (it must occur exactly once), runs the
tests that should catch it, and restores the file whatever happens. A mutation that
leaves its tests green is a hole in the suite: the script exits 1 and says which.
The last run's output is recorded in tests/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments


MUTATIONS = (
    Mutation("ddp-slicing", "DDP ranks all train on the whole split (no rank/world_size slicing)",
             "resnet_core/train.py", "rank=rank, world_size=world_size,", "rank=0, world_size=1,",
             ("tests/search/test_distributed.py", "-k", "all_reduce")),
    Mutation("ranking", "the ranking is reversed (the worst trial wins)",
             "search/ranking.py", 'return (-value if mode == "max" else value, val_loss)',
             'return (value if mode == "max" else -value, val_loss)',
             ("tests/search/test_ranking.py",)),
    Mutation("test-split", "the champion is scored on the validation split, not the test split",
             "search/champion.py", 'split="test", device="cpu", source=source',
             'split="val", device="cpu", source=source',
             ("tests/search/test_study.py", "-k", "load_best")),
    Mutation("tracking-uri", "[tracking] uri of the study file is ignored",
             "search/study.py", "tracking.resolve_tracking_uri(tracking_uri, config.tracking.uri)",
             "tracking.resolve_tracking_uri(tracking_uri, None)",
             ("tests/search/test_study.py", "-k", "tracking_uri_of_the_study_file")),
    Mutation("resume-searcher", "resume starts a fresh Tuner (the searcher and trials are not restored)",
             "search/study.py", "tuner = build_tuner(config, callback, restore=True)",
             "tuner = build_tuner(config, callback)",
             ("tests/search/test_study.py", "-k", "killed_driver")),
    Mutation("depth-rules", "the basic and bottleneck depth rules are swapped",
             "resnet_core/config.py", '("basic", False): (6, 2),\n    ("bottleneck", False): (9, 2),',
             '("basic", False): (9, 2),\n    ("bottleneck", False): (6, 2),',
             ("tests/resnet_core/test_models.py",)),
    Mutation("retries", "a trial whose process dies is retried 4 times, not 3",
             "search/study.py", "tune.FailureConfig(max_failures=3)", "tune.FailureConfig(max_failures=4)",
             ("tests/search/test_study.py", "-k", "retried_from_its_checkpoint")),
    Mutation("latency-limit", "max_latency_ms is looked up under the study file's key, never found",
             "search/trainable.py",
             'feasible = "latency_ms" not in limits or latency <= limits["latency_ms"]',
             'feasible = "max_latency_ms" not in limits or latency <= limits["max_latency_ms"]',
             ("tests/search/test_constraints.py", "-k", "latency")),
    Mutation("tracking-queue", "the trial callback writes to MLflow in the Tune loop (no queue)",
             "search/tracking_writer.py", '        """Queue `job` (a write); returns at once."""\n',
             '        """Queue `job` (a write); returns at once."""\n        return job()\n',
             ("tests/search/test_tracking_server.py", "-k", "outage")),
)


def run_mutation(mutation: Mutation, timeout: float) -> tuple[bool, float, str]:
    """(killed, seconds, last line of pytest): killed means the tests failed, as they should."""
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the text to mutate occurs {original.count(mutation.old)} "
                         f"times in {mutation.path} (expected once); update tests/mutate.py")
    start = time.perf_counter()
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *mutation.tests], cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return result.returncode != 0, time.perf_counter() - start, lines[-1] if lines else ""
    finally:
        path.write_text(original)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="apply deliberate bugs and check the tests fail")
    parser.add_argument("--only", nargs="*", choices=[m.name for m in MUTATIONS])
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    survivors = []
    print(f"{'mutation':<16} {'result':<9} {'seconds':>8}  pytest")
    for mutation in chosen:
        killed, seconds, last = run_mutation(mutation, args.timeout)
        print(f"{mutation.name:<16} {'caught' if killed else 'MISSED':<9} {seconds:>8.0f}  {last}",
              flush=True)
        if not killed:
            survivors.append(mutation)
    for mutation in survivors:
        print(f"MISSED: {mutation.name}: {mutation.what} -- no test in {' '.join(mutation.tests)} failed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
