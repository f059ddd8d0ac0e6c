"""DDP trials through Ray Train on this CPU: two gloo workers, real training on digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from study_helpers import study_toml

from search.tracking import tags
from search.trial.spec import TrialResources, TrialSpec

pytestmark = pytest.mark.slow

# ASHA stops every trial itself at max_t (the last epoch): Tune removes the trial's placement
# group, killing its process; the Train run must still end and free its CPUs, or the second
# trial would wait forever. (A trial function that returns at the end of training, the case
# without a scheduler, is covered by TestTwoGlooWorkers: a whole study of it added 55 s.)
ASHA_AT_MAX_T = {"kind": "asha", "grace_period": 2, "reduction_factor": 2}


def ddp_study() -> str:
    return study_toml("ddp", study={"seed": 3}, space={"width": 1}, scheduler=ASHA_AT_MAX_T,
                      resources={"workers_per_trial": 2})

# 1024 training images: 16 whole batches of 32 per rank, so that the two shares of an epoch
# must be exactly the whole split (no remainder dropped).
TRAIN_IMAGES = 1024


def trial_config(tmp_path: Path, epochs: int = 1, lr: float = 0.05) -> TrialSpec:
    """A resolved trial exactly as the study's search space hands it to a DDP trial."""
    import optuna
    import tomllib

    from search.space.sampler import SearchSpace
    from search.studyfile.config import parse_study

    text = study_toml("unit", study={"seed": 0},
                      data={"root": str(tmp_path / "data"), "subset": TRAIN_IMAGES},
                      train={"epochs": epochs, "lr": lr, "momentum": 0.9},
                      space={"family": "wrn", "depth": 10, "width": 1}, replace_space=True,
                      resources={"workers_per_trial": 2})
    raw = tomllib.loads(text)
    return SearchSpace(parse_study(raw)).sample(optuna.trial.FixedTrial({}))


@pytest.fixture(scope="class")
def local_ray():
    import ray
    from ray import cloudpickle

    # Workers cannot import this test module: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


def fit_and_collect(config: TrialSpec, storage: Path, name: str, **kwargs) -> list[tuple[dict, object]]:
    """Run a DDP trainer; return what the trial process would forward to Tune, in order."""
    from ray.util.queue import Queue

    from search.trial.distributed import ForwardToTrial, build_trainer

    queue = Queue(actor_options={"num_cpus": 0})
    result = build_trainer(config, storage_path=str(storage), name=name,
                           callbacks=[ForwardToTrial(queue)], **kwargs).fit()
    assert result.error is None
    return [queue.get() for _ in range(queue.size())]


def record_samples(run) -> None:
    run.train_loader.index_log = []
    run.val_loader.index_log = []


def dump_each_rank_loop(loop_config: dict) -> None:
    """The real worker loop, then each rank saves the weights and loader share it ended with,
    and the indices of the samples it trained and validated on."""
    import ray

    from search.trial.ddp_worker import run_worker

    run = run_worker(loop_config, before_training=record_samples)
    out = Path(loop_config["out"]) / f"rank{run.rank}"
    torch.save({name: p.detach().cpu() for name, p in run.model.named_parameters()},
               f"{out}.pt")
    Path(f"{out}.json").write_text(json.dumps({
        "rank": run.rank, "world_size": run.world_size, "threads": torch.get_num_threads(),
        "reserved_cpu": ray.get_runtime_context().get_assigned_resources().get("CPU"),
        "per_worker_batch": run.train_loader.batch_size,
        "local_images": run.train_loader.num_images, "history": run.history,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else "",
        "trained_on": torch.cat(run.train_loader.index_log).tolist(),
        "validated_on": torch.cat(run.val_loader.index_log).tolist(),
        "train_images": len(run.data.train), "val_images": len(run.data.val),
    }))


@pytest.fixture(scope="class")
def one_epoch(local_ray, tmp_path_factory):
    """One epoch of a two-worker trial (gloo, half a CPU each) through the real worker loop."""
    tmp = tmp_path_factory.mktemp("ddp-unit")
    config = trial_config(tmp, epochs=1)
    forwarded = fit_and_collect(config, tmp / "train", "one-epoch", loop=dump_each_rank_loop,
                                extra_loop_config={"out": str(tmp)})
    ranks = [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(tmp / f"rank{r}.pt") for r in (0, 1)]
    return config, forwarded, ranks, weights, tmp


def test_the_trial_config_carries_the_worker_split(tmp_path):
    spec = trial_config(tmp_path)
    assert spec.resources == TrialResources(workers=2, cpus_per_worker=0.5, gpus_per_worker=0.0)
    # What Tune carries and hands back to the trial is the same trial.
    assert TrialSpec.from_tune(spec.to_tune()) == spec


class TestTwoGlooWorkers:
    """The real worker set-up under Ray Train in this process's own local Ray
    (shut down when the class ends, before the studies start Ray of their own)."""

    def test_two_gloo_workers_all_reduce_gradients_and_metrics(self, one_epoch):
        """Both ranks end the epoch with identical weights and identical, reduced train metrics."""
        _, _, ranks, weights, _ = one_epoch
        assert [r["rank"] for r in ranks] == [0, 1]
        assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
        # cpus_per_trial = 1 over 2 workers: half a CPU each (less half the trial driver's 0.01)
        # and one torch thread; the global batch of 64 is 32 images per worker.
        assert all(r["reserved_cpu"] == pytest.approx(0.495) for r in ranks)
        assert all(r["threads"] == 1 and r["per_worker_batch"] == 32 for r in ranks)
        # Train metrics are sums over both shares: the same on both ranks, and the
        # accuracy counts the images of both shares.
        first, second = (r["history"][0] for r in ranks)
        for key in ("train_loss", "train_accuracy"):
            assert first[key] == pytest.approx(second[key], rel=1e-12), key
        total = ranks[0]["local_images"] + ranks[1]["local_images"]
        assert first["train_accuracy"] * total == pytest.approx(
            round(first["train_accuracy"] * total), abs=1e-6)
        assert first["images_per_second"] > 0

        assert weights[0].keys() == weights[1].keys()
        for name in weights[0]:
            assert torch.equal(weights[0][name], weights[1][name]), name

    def test_the_ranks_shares_are_disjoint_and_together_the_whole_epoch(self, one_epoch):
        """What each rank trained on, recorded batch by batch: no image twice, none left out.
        Validation is not sharded: every rank scores the whole split."""
        _, _, ranks, _, _ = one_epoch
        shares = [r["trained_on"] for r in ranks]
        assert ranks[0]["train_images"] == TRAIN_IMAGES
        assert len(shares[0]) == len(shares[1]) == TRAIN_IMAGES // 2 == ranks[0]["local_images"]
        assert len(set(shares[0])) == len(shares[0])
        assert not set(shares[0]) & set(shares[1])
        assert set(shares[0]) | set(shares[1]) == set(range(TRAIN_IMAGES))
        # A shuffled epoch, not one half each in split order.
        assert shares[0] != sorted(shares[0])
        for rank in ranks:
            assert sorted(rank["validated_on"]) == list(range(rank["val_images"]))

    def test_rank_zero_result_and_checkpoint_reach_the_trial(self, one_epoch):
        _, forwarded, ranks, _, _ = one_epoch
        assert len(forwarded) == 1
        metrics, checkpoint = forwarded[0]
        assert metrics["epoch"] == 1 and metrics["diverged"] == 0
        assert metrics["world_size"] == 2 and metrics["rank"] == 0
        assert metrics["resumed_from_epoch"] == 0 and metrics["device"] == "cpu"
        assert metrics["val_accuracy"] == ranks[0]["history"][0]["val_accuracy"]
        assert metrics["best_val_accuracy"] == metrics["val_accuracy"]
        assert checkpoint is not None

    def test_a_restarted_trial_resumes_from_its_checkpoint(self, one_epoch):
        from resnet_core.checkpoint import load_checkpoint

        _, forwarded, _, weights, tmp = one_epoch
        checkpoint = forwarded[0][1]
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory)
        assert state["epoch"] == 1
        for name, tensor in weights[0].items():
            assert torch.equal(state["model"][name], tensor), name

        resumed = fit_and_collect(trial_config(tmp, epochs=2), tmp / "train", "resumed",
                                  resume_from=checkpoint)
        assert [m["epoch"] for m, _ in resumed] == [2]
        assert resumed[0][0]["resumed_from_epoch"] == 1
        assert resumed[0][1] is not None

    def test_a_torn_checkpoint_restarts_the_trial_and_says_so_on_its_run(self, one_epoch):
        # As for single-worker trials, the note reaches the trial's MLflow run
        # (the driver tags `checkpoint_restore` from the first result that carries it).
        import shutil

        import ray

        _, forwarded, _, _, tmp = one_epoch
        torn = tmp / "torn-checkpoint"
        with forwarded[0][1].as_directory() as directory:
            shutil.copytree(directory, torn)
        weights = torn / "checkpoint.pt"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        resumed = fit_and_collect(trial_config(tmp, epochs=1), tmp / "train", "torn",
                                  resume_from=ray.train.Checkpoint.from_directory(str(torn)))
        first = resumed[0][0]
        assert first["epoch"] == 1 and first["resumed_from_epoch"] == 0  # from scratch
        assert "restarted from scratch" in first.get("checkpoint_restore", ""), first

    def test_a_diverged_trial_ends_cleanly_on_every_rank(self, local_ray, tmp_path):
        forwarded = fit_and_collect(trial_config(tmp_path, epochs=2, lr=1e12), tmp_path / "train",
                                    "diverged")
        assert len(forwarded) == 1
        metrics, checkpoint = forwarded[0]
        assert metrics["diverged"] == 1 and metrics["epoch"] == 1
        assert metrics["val_accuracy"] == 0.0 and metrics["val_loss"] == 1e9
        assert "non-finite" in metrics["error"]
        assert checkpoint is None


def announce_then_wait_loop(loop_config: dict) -> None:
    """Workers that start like the real ones, then never report (a trial stopped mid-epoch)."""
    import time

    from search.trial.ddp_worker import announce_workers

    announce_workers(loop_config)
    time.sleep(3600)


class TestAStoppedTrialFreesItsWorkers:
    """Its own local Ray, so that the CPUs it counts are the workers' alone."""

    def test_the_launcher_frees_the_workers_of_a_trial_that_disappeared(self, local_ray,
                                                                          tmp_path):
        import time

        import pyarrow.fs
        from ray.util.queue import Queue

        from search.trial.distributed import start_launcher

        ray = local_ray
        total = ray.cluster_resources()["CPU"]
        # The queue stands for the trial: it dies with the trial's process.
        queue = Queue(actor_options={"num_cpus": 0})
        launcher = start_launcher(queue)
        fit = launcher.fit.remote(trial_config(tmp_path, epochs=50), None, str(tmp_path / "train"),
                                  pyarrow.fs.LocalFileSystem(), "stopped",
                                  loop=announce_then_wait_loop)
        deadline = time.monotonic() + 120
        while ray.available_resources().get("CPU", 0) > total - 0.9:  # workers hold 0.99
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.5)
        ray.kill(queue.actor)  # the trial is gone (Tune removed its placement group)

        # Without the launcher the workers' placement group would stay reserved until
        # the study's driver exits, and the next trials would wait forever.
        ray.wait([fit], timeout=90)
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < total - 1e-6:
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.5)
        # The staging folder goes with the run (once the workers' group has ended).
        deadline = time.monotonic() + 90
        while (tmp_path / "train").exists():
            assert time.monotonic() < deadline, "the staging folder was never removed"
            time.sleep(0.5)


def test_quickstart_style_study_with_two_workers_per_trial(studies):
    """workers_per_trial = 2 runs whole studies on this 2-core machine."""
    path = studies.write("ddp", ddp_study())
    result = studies.cli("run", str(path), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered model: models:/ddp-model@champion (version 1)" in result.stdout

    client = studies.client()
    runs = studies.trial_runs("ddp")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags[tags.STATUS] == "completed"
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        assert run.data.tags.get(tags.CHECKPOINT)
        assert run.data.metrics["world_size"] == 2  # MLflow records the DDP width

    # Ray's own record of every result: two workers per trial, rank 0 reporting.
    trial_dirs = sorted((studies.home / "ray_results" / "ddp").glob("trial_*"))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        results = [json.loads(line) for line in
                   (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        assert [r["epoch"] for r in results] == [1, 2]
        assert all(r["world_size"] == 2 and r["rank"] == 0 for r in results)
        assert sorted(p.name for p in trial_dir.glob("checkpoint_*"))  # Tune holds checkpoints
        # Ray Train's staging folder is gone once Tune has its own copies.
        assert not (trial_dir / "ddp-train").exists()
