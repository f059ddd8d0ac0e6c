"""The CUDA and NCCL paths, where a GPU exists (`make test-gpu`); tests/conftest.py skips them,
with the reason, on a machine where torch sees no (or too few) CUDA GPUs."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from study_helpers import Studies, study_toml

from resnet_core.data import DataConfig, load_data
from resnet_core.models import parse_model_name
from resnet_core.train import TrainConfig, TrainingRun, fit
from search.tracking import tags

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def conv_output_dtypes(run: TrainingRun) -> set[torch.dtype]:
    """What the network computes in, recorded from its first convolution while it trains."""
    seen: set[torch.dtype] = set()
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _module, _input, output: seen.add(output.dtype))
    return seen


def test_training_on_cuda_runs_under_bf16_autocast_by_default():
    run = TrainingRun(parse_model_name("wrn-10-2"), TrainConfig(epochs=3, batch_size=64),
                      load_data(DataConfig("digits")), "cuda")
    assert run.amp  # bf16 by default on a GPU that supports it
    dtypes = conv_output_dtypes(run)
    fit(run)
    assert dtypes == {torch.bfloat16}
    assert next(run.model.parameters()).dtype == torch.float32  # fp32 master weights
    assert run.test()[1] > 0.8


def test_auto_gpu_share_holds_what_a_trial_really_allocates():
    """The estimate behind `gpus_per_trial = "auto"` bounds the memory a real epoch allocates
    (allocator bytes: no CUDA context), and is not so loose that packing wastes the GPU."""
    from search.study.gpu_packing import AutoGpuResources, estimate_training_memory

    model, batch = parse_model_name("wrn-16-4"), 128
    data_config = DataConfig("synthetic", synthetic_size=2048)
    run = TrainingRun.from_configs(model, TrainConfig(epochs=1, batch_size=batch), data_config,
                                   "cuda")
    torch.cuda.reset_peak_memory_stats()
    fit(run)
    peak = torch.cuda.max_memory_allocated()
    images = len(run.data.train) + len(run.data.val) + len(run.data.test)
    estimate = estimate_training_memory(model, batch, data_config.image_shape, optimizer="sgd",
                                        amp=run.amp, dataset_images=images)
    # The overhead allowance covers cuBLAS/cuDNN workspaces, which the allocator counts.
    assert estimate.total >= peak, (estimate, peak)
    assert estimate.total - estimate.overhead < 3 * peak, (estimate, peak)
    # The share that Tune reserves for such a trial holds the estimate.
    share = AutoGpuResources(1, "cifar10").fraction_for(
        {"model": model.to_dict(), "train": {"batch_size": batch, "optimizer": "sgd"}})
    assert share * torch.cuda.get_device_properties(0).total_memory >= estimate.total


def test_four_trials_share_one_gpu_at_once(tmp_path):
    (tmp_path / "home").mkdir()
    studies = Studies(tmp_path / "home", private_ray=True)
    path = studies.write("packed", study_toml(
        "packed", study={"num_samples": 4, "max_concurrent_trials": 4},
        train={"epochs": 10}, resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25}))
    result = studies.cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("packed")
    assert len(runs) == 4
    assert {r.data.tags[tags.DEVICE] for r in runs} == {"cuda"}
    assert len({r.data.tags.get(tags.GPU_IDS) for r in runs}) == 1  # the same GPU
    # All four trained at the same time on the one GPU: every run started before any ended.
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)


class TestTwoNcclWorkers:
    """A DDP trial of two workers, one GPU each, through the real worker loop."""

    @pytest.fixture(scope="class")
    def ranks(self, tmp_path_factory):
        import json

        import ray
        import test_distributed
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(test_distributed)
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        tmp = tmp_path_factory.mktemp("nccl")
        config = test_distributed.trial_config(tmp, epochs=1)
        config = dataclasses.replace(
            config, resources=dataclasses.replace(config.resources, gpus_per_worker=1.0))
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            test_distributed.fit_and_collect(config, tmp / "train", "nccl",
                                             loop=test_distributed.dump_each_rank_loop,
                                             extra_loop_config={"out": str(tmp)})
        finally:
            ray.shutdown()
        return [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]

    @pytest.mark.gpu(count=2)
    def test_the_ranks_train_over_nccl_on_disjoint_shares(self, ranks):
        assert [r["backend"] for r in ranks] == ["nccl", "nccl"]
        shares = [set(r["trained_on"]) for r in ranks]
        assert not shares[0] & shares[1]
        assert shares[0] | shares[1] == set(range(ranks[0]["train_images"]))
        first, second = (r["history"][0] for r in ranks)
        assert first["train_loss"] == pytest.approx(second["train_loss"], rel=1e-6)

