"""Study-file validation: every bad file gets one line naming the key, the value and what is allowed."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import pytest
import tomllib
from common import ROOT, cli, with_own_images

from resnet_core.config import ConfigValueError, ModelConfig, TrainConfig
from resnet_core.data import DataConfig
from search.space.sampler import InfeasibleArchitecture, SearchSpace
from search.studyfile.config import ConfigError, config_params, load_study, parse_study, study_params
from search.studyfile.space_rules import SPACE_KEYS

GOOD = """
[study]
name = "t"
num_samples = 2
[train]
epochs = 2
[space]
family = "wrn"
depth = 10
"""


def study(text: str = "", base: str = GOOD) -> dict:
    """GOOD with `text` merged in (later tables and keys win)."""
    raw = tomllib.loads(base)
    for section, values in tomllib.loads(text).items():
        raw.setdefault(section, {}).update(values)
    return raw


BAD_STUDIES = [
    # (what is wrong, study patch, the error it must give)
    ("unknown section", "[studdy]\nname='x'", "unknown section [studdy] (did you mean 'study'?)"),
    ("unknown key", "[train]\nepochz = 3", "[train] unknown key 'epochz' (did you mean 'epochs'?)"),
    ("unknown space key", "[space]\nlearning_rate = 0.1", "[space] unknown key 'learning_rate'"),
    ("wrong type", "[train]\nepochs = 'ten'", "[train] epochs: 'ten' must be an integer"),
    ("bool for int", "[study]\nnum_samples = true", "[study] num_samples: True must be an integer"),
    ("zero samples", "[study]\nnum_samples = 0", "[study] num_samples: 0 must be >= 1"),
    ("unknown metric", "[study]\nmetric = 'val_acc'",
     "[study] metric: 'val_acc' is not one of val_accuracy, val_loss, best_val_accuracy"),
    ("mode contradicts metric", "[study]\nmetric = 'val_loss'\nmode = 'max'",
     "[study] mode: 'max' contradicts metric 'val_loss'"),
    ("unknown dataset", "[data]\ndataset = 'cifar'", "[data] dataset: 'cifar' is not one of"),
    ("unknown optimizer in space", "[space]\noptimizer = ['sgd', 'adamax']",
     "[space] optimizer[1]: 'adamax' is not one of sgd, nesterov, adam, adamw, adagrad, rmsprop"),
    ("unknown optimizer in train", "[train]\noptimizer = 'lbfgs'",
     "[train] optimizer: 'lbfgs' is not one of"),
    ("low >= high", "[space]\nlr = { low = 0.1, high = 0.01 }",
     "[space] lr: low=0.1 must be < high=0.01"),
    ("log with low <= 0", "[space]\nweight_decay = { low = 0.0, high = 0.1, log = true }",
     "[space] weight_decay: log=true needs low > 0, got low=0.0"),
    ("dropout out of range", "[space]\ndropout = { low = 0.0, high = 1.0 }",
     "[space] dropout.high: 1.0 must be a number in [0, 1)"),
    ("dropout choice out of range", "[space]\ndropout = [0.0, 1.2]",
     "[space] dropout[1]: 1.2 must be a number in [0, 1)"),
    ("lr not positive", "[space]\nlr = -0.1", "[space] lr: -0.1 must be a number > 0"),
    ("range key typo", "[space]\nlr = { low = 0.01, hihg = 0.1 }",
     "[space] lr: unknown range key 'hihg' (did you mean 'high'?)"),
    ("range without high", "[space]\nlr = { low = 0.01 }",
     "[space] lr: a range needs both low and high"),
    ("depth no family accepts", "[space]\ndepth = [11, 13]",
     "[space] depth: [11, 13] has no valid depth for family 'wrn' (wrn depths are 6n+4"),
    ("depth invalid for one family", "[space]\nfamily = ['wrn', 'resnet']\ndepth = [16, 22]",
     "[space] depth: [16, 22] has no valid depth for family 'resnet'"),
    ("bottleneck depth", "[space]\nfamily = 'resnet'\nblock = 'bottleneck'\ndepth = 14",
     "has no valid depth for family 'resnet' with bottleneck blocks (bottleneck depths are 9n+2"),
    ("unknown family", "[space]\nfamily = 'densenet'", "[space] family: 'densenet' is not one of"),
    ("range of strings", "[space]\noptimizer = { low = 'a', high = 'b' }",
     "[space] optimizer: a range needs numbers; list the choices instead"),
    ("empty choice list", "[space]\nwidth = []", "[space] width: an empty list has nothing to"),
    ("set twice", "[space]\nlr = [0.1, 0.2]\n[train]\nlr = 0.1",
     "[space] lr is also set in [train]; set it in one place"),
    ("bad scheduler", "[scheduler]\nkind = 'hyperband'",
     "[scheduler] kind: 'hyperband' must be \"asha\" or \"none\""),
    ("grace period beyond epochs", "[scheduler]\ngrace_period = 5",
     "[scheduler] grace_period: 5 must be in [1, epochs=2]"),
    ("negative cpus", "[resources]\ncpus_per_trial = 0", "[resources] cpus_per_trial: 0 must be > 0"),
    ("bad gpus", "[resources]\ngpus_per_trial = 'half'",
     "[resources] gpus_per_trial: 'half' must be a number >= 0 or \"auto\""),
    ("fractional gpus above one", "[resources]\ngpus_per_trial = 1.5",
     "[resources] gpus_per_trial: 1.5 must be a fraction in [0, 1] or a whole number"),
    ("batch not divisible by workers", "[resources]\nworkers_per_trial = 3",
     "batch_size 128 is not divisible by [resources] workers_per_trial=3"),
    ("negative retries", "[resources]\nmax_failures = -1",
     "[resources] max_failures: -1 must be >= 0 (retries of a failed trial; 0: none)"),
    ("auto gpus with ddp", "[resources]\ngpus_per_trial = 'auto'\nworkers_per_trial = 2",
     "[resources] gpus_per_trial: \"auto\" packs single-worker trials"),
    ("after_add without resnet", "[space]\nbn_position = ['before_add', 'after_add']",
     "[space] bn_position: 'after_add' needs family 'resnet'"),
    ("name with slash", "[study]\nname = 'a/b'", "[study] name: 'a/b' must be printable, without slashes"),
    ("negative weight decay", "[train]\nweight_decay = -1", "[train] weight_decay: -1 must be >= 0"),
    ("momentum above one", "[train]\nmomentum = 1.5", "[train] momentum: 1.5 must be in [0, 1)"),
    ("zero grad clip", "[train]\ngrad_clip = 0", "[train] grad_clip: 0 must be > 0"),
    ("zero gamma", "[train]\ngamma = 0", "[train] gamma: 0 must be > 0"),
    ("empty milestones", "[train]\nmilestones = []", "[train] milestones: [] must be fractions"),
    ("bad synthetic shape", "[data]\nsynthetic_shape = [3, 'x', 32]",
     "[data] synthetic_shape: [3, 'x', 32] must be a list of 3 integers"),
    ("negative seed", "[study]\nseed = -1", "[study] seed: -1 must be between 0 and 2147483647"),
    ("warm-up longer than the training", "[space]\nwarmup_epochs = [0, 5]",
     "[space] warmup_epochs: up to 5 is longer than [train] epochs = 2; a warm-up must fit"),
    ("optuna study without a storage", "[study]\noptuna_study = 'earlier'",
     "[study] optuna_study: 'earlier' names a study in optuna_storage, which is not set"),
    ("seed numpy cannot take", "[study]\nseed = 99999999999999999",
     "[study] seed: 99999999999999999 must be between 0 and 2147483647"),
    ("registered model with a slash", "[tracking]\nregistered_model = 'a/b'",
     "[tracking] registered_model: 'a/b' must be printable, without slashes, ':' or shell"),
    ("study name with a colon", "[study]\nname = 'a:b'",
     "[study] name: 'a:b' must be printable, without slashes, ':' or shell"),
    ("milestone beyond training", "[train]\nmilestones = [0.5, 1.5]",
     "[train] milestones: [0.5, 1.5] must be fractions of training in (0, 1)"),
    ("tracking uri without scheme", "[tracking]\nuri = 'mlflow:5000'",
     "[tracking] uri: 'mlflow:5000' is not a tracking URI"),
    ("batch range workers cannot split",
     "[space]\nbatch_size = { low = 30, high = 100 }\n[resources]\nworkers_per_trial = 2",
     "[space] batch_size: { low = 30, high = 100 } can sample batches that 2 workers cannot"),
    ("wrn with bottleneck only", "[space]\nblock = 'bottleneck'",
     "[space] block: ['bottleneck'] has no block for family 'wrn'"),
    # per-optimizer entries: `lr.sgd = { low, high }`, keyed by the optimizer's values
    ("per-optimizer key typo", "[space]\noptimizer = ['sgd', 'adam']\nlr = { sgd = 0.1, adma = 0.001 }",
     "[space] lr: 'adma' is not one of sgd, nesterov, adam, adamw, adagrad, rmsprop "
     "(did you mean 'adam'?)"),
    ("per-optimizer entry missing", "[space]\noptimizer = ['sgd', 'adam']\nlr.sgd = 0.1",
     "[space] lr: no entry for optimizer 'adam', which [space] optimizer ['sgd', 'adam'] can sample"),
    ("per-optimizer entry never sampled", "[space]\nlr = { sgd = 0.1, adam = 0.001 }",
     "[space] lr.adam: optimizer 'adam' is never sampled with lr ([train] optimizer='sgd')"),
    ("momentum entry for adam", "[space]\noptimizer = ['sgd', 'adam']\nmomentum = { sgd = 0.9, adam = 0.9 }",
     "[space] momentum.adam: optimizer 'adam' is never sampled with momentum"),
    # a conditional key that no trial of the space can sample (GOOD: family wrn, sgd)
    ("width without wrn", "[space]\nfamily = ['resnet', 'plain']\ndepth = 20\nwidth = [2, 4]",
     "[space] width: no trial can sample it: it applies when family in wrn, imagenet-resnet, "
     "imagenet-preact-resnet (a family with a width factor), and [space] "
     "family = ['resnet', 'plain'] has none; remove it"),
    ("momentum with adam only", "[train]\noptimizer = 'adam'\n[space]\nmomentum = 0.9",
     "[space] momentum: no trial can sample it: it applies when optimizer in sgd, nesterov, "
     "rmsprop, and [train] optimizer = 'adam' has none"),
    ("block with wrn only", "[space]\nblock = ['basic']",
     "[space] block: no trial can sample it: it applies when family in plain, resnet, "
     "preact-resnet, imagenet-resnet, imagenet-preact-resnet (a family with a choice of "
     "block)"),
    ("per-optimizer bad range", "[space]\nlr.sgd = { low = 0.1, high = 0.01 }",
     "[space] lr.sgd: low=0.1 must be < high=0.01"),
    ("per-optimizer nested", "[space]\nlr.sgd.adam = 0.1",
     "[space] lr.sgd: a conditional entry cannot be nested"),
    ("per-optimizer model key", "[space]\ndropout = { sgd = 0.1 }",
     "[space] dropout: a table without low/high is a per-optimizer entry, which only [train] keys"),
    # [constraints] and multi-objective [study] objectives
    ("unknown constraint", "[constraints]\nmax_param = 1000",
     "[constraints] unknown key 'max_param' (did you mean 'max_params'?)"),
    ("zero max_params", "[constraints]\nmax_params = 0", "[constraints] max_params: 0 must be > 0"),
    ("negative latency", "[constraints]\nmax_latency_ms = -1.5",
     "[constraints] max_latency_ms: -1.5 must be > 0"),
    ("float max_params", "[constraints]\nmax_params = 1e5",
     "[constraints] max_params: 100000.0 must be an integer"),
    ("text latency", "[constraints]\nmax_latency_ms = 'fast'",
     "[constraints] max_latency_ms: 'fast' must be a number"),
    ("max_params below every network", "[constraints]\nmax_params = 1000",
     "[constraints] max_params: 1000 is below every network of [space]; the smallest, wrn-10-1, "
     "has 77,562 params"),
    ("max_flops below every network", "[constraints]\nmax_flops = 1000",
     "[constraints] max_flops: 1000 is below every network of [space]"),
    ("unknown objective", "[study]\nobjectives = ['val_accuracy', 'parms']",
     "[study] objectives[1]: 'parms' is not one of params, flops, latency_ms "
     "(did you mean 'params'?)"),
    ("objectives without a cost", "[study]\nobjectives = ['val_accuracy']",
     "[study] objectives: ['val_accuracy'] needs at least one cost after the metric"),
    ("objectives not led by the metric", "[study]\nobjectives = ['params', 'val_accuracy']",
     "[study] objectives[0]: 'params' must be the study metric 'val_accuracy'"),
    ("objective twice", "[study]\nobjectives = ['val_accuracy', 'params', 'params']",
     "[study] objectives: ['val_accuracy', 'params', 'params'] lists an objective twice"),
    ("objectives not a list", "[study]\nobjectives = 'params'",
     "[study] objectives: 'params' must be a list of strings"),
]


@pytest.mark.parametrize(("patch", "message"), [(p, m) for _, p, m in BAD_STUDIES],
                         ids=[w for w, _, _ in BAD_STUDIES])
def test_bad_studies_give_one_clear_line(patch, message):
    raw = study(patch)
    with pytest.raises(ConfigError) as error:
        parse_study(raw, label="bad.toml")
    text = str(error.value)
    assert text.startswith("bad.toml: ")
    assert message in text, text
    assert "\n" not in text


def test_train_and_data_rules_are_the_dataclasses_rules():
    """One set of rules: a bad [train]/[data] value is refused by the resnet_core class itself."""
    classes = {"train": TrainConfig, "data": DataConfig}
    checked = 0
    for what, patch, message in BAD_STUDIES:
        raw = tomllib.loads(patch)
        if not set(raw) <= set(classes) or any(
                key not in classes[section].__dataclass_fields__
                for section, values in raw.items() for key in values):
            continue
        for section, values in raw.items():
            with pytest.raises(ConfigValueError) as error:
                classes[section](**values)
            e = error.value
            assert message in f"[{section}] {e.field}: {e.value!r} {e.problem}", what
            checked += 1
    assert checked >= 10


def _space_value(spec):
    if spec.default is None:
        return spec.metadata["choices"][0] if spec.metadata["choices"] else 1
    return spec.default


def test_space_keys_are_the_searchable_fields_of_the_configs():
    for cls in (ModelConfig, TrainConfig):
        for spec in fields(cls):
            if spec.name in ("family", "depth"):
                continue
            # Both families, so that block and bn_position (resnet only) can be sampled; the
            # stem is the ImageNet ResNets'.
            families = "['imagenet-resnet']" if spec.name == "stem" else "['wrn', 'resnet']"
            raw = study(f"[space]\nfamily = {families}\ndepth = [10, 14, 18]\n"
                        f"{spec.name} = {json.dumps(_space_value(spec))}")
            raw["train"].pop("epochs") if spec.name == "epochs" else None
            if spec.metadata["searchable"]:
                param = parse_study(raw).space[spec.name]
                assert param.value == _space_value(spec)
            else:
                with pytest.raises(ConfigError, match=f"unknown key '{spec.name}'"):
                    parse_study(raw)
    assert set(SPACE_KEYS) == {"family", "depth", "width", "block", "shortcut", "bn_position",
                               "dropout", "optimizer", "lr", "momentum", "weight_decay",
                               "batch_size", "label_smoothing", "schedule", "warmup_epochs",
                               "stem", "backbone_lr_factor"}


def test_params_hold_every_field_but_secrets():
    config = parse_study(study("[study]\noptuna_storage = 'postgresql://u:hunter2@db/optuna'"))
    params = study_params(config)
    for section, cls in (("study", None), ("data", DataConfig), ("train", TrainConfig)):
        names = [f.name for f in fields(cls)] if cls else ["name", "num_samples", "seed"]
        assert {f"{section}.{name}" for name in names} <= set(params), section
    assert "study.optuna_storage" not in params
    assert not any("hunter2" in value for value in params.values())
    trial = config_params(model=ModelConfig("wrn", 10).to_dict(), train=TrainConfig().to_dict())
    assert trial["model.depth"] == "10" and trial["train.milestones"] == "(0.3, 0.6, 0.8)"
    assert set(trial) == {f"model.{f.name}" for f in fields(ModelConfig)} | {
        f"train.{f.name}" for f in fields(TrainConfig)}


def test_mode_follows_the_metric_unless_given():
    assert parse_study(study("[study]\nmetric = 'val_loss'")).study.mode == "min"
    assert parse_study(study()).study.mode == "max"
    config = parse_study(study("[train]\nmilestones = [0.5, 0.75]\nschedule = 'milestones'"))
    assert SearchSpace(config)(FixedTrial())["train"]["milestones"] == [0.5, 0.75]


def test_asha_decides_first_after_two_epochs_unless_told_or_the_study_is_shorter():
    # benchmarks/SEARCH.md: epoch-1 accuracy barely ranks trials, epoch 2 does.
    assert parse_study(study("[train]\nepochs = 8")).scheduler.grace_period == 2
    assert parse_study(study("[train]\nepochs = 1")).scheduler.grace_period == 1
    told = parse_study(study("[train]\nepochs = 8\n[scheduler]\ngrace_period = 1"))
    assert told.scheduler.grace_period == 1


def test_tpe_starts_with_a_third_of_the_study_at_random():
    from search.space.searcher import build_sampler

    def startup(samples: int) -> int:
        return build_sampler(parse_study(study(f"[study]\nnum_samples = {samples}")))._n_startup_trials

    assert (startup(4), startup(16), startup(90)) == (3, 5, 10)


def test_missing_name_and_space():
    with pytest.raises(ConfigError, match=r"\[study\] name: missing"):
        parse_study(study(base="[space]\nfamily='wrn'\ndepth=10"))
    with pytest.raises(ConfigError, match=r"\[space\]: missing"):
        parse_study({"study": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"\[space\] depth: missing; the space needs `depth`"):
        parse_study(study(base=GOOD.replace("depth = 10\n", "")))


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[study\nname = 1")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_study(path)
    with pytest.raises(ConfigError, match="study file .*nope.toml not found"):
        load_study(tmp_path / "nope.toml")


class FixedTrial:
    """A stand-in Optuna trial that takes the first choice / the low end (deterministic)."""

    number = 0

    def __init__(self, pick=0):
        self.pick = pick
        self.names: list[str] = []

    def suggest_categorical(self, name, choices):
        self.names.append(name)
        return choices[self.pick % len(choices)]

    def suggest_int(self, name, low, high, step=1, log=False):
        self.names.append(name)
        return high if self.pick else low

    def suggest_float(self, name, low, high, step=None, log=False):
        self.names.append(name)
        return high if self.pick else low


@pytest.mark.slow
def test_every_shipped_study_file_is_valid_and_samples_buildable_networks(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    files = sorted((ROOT / "configs").glob("*.toml"))
    assert {f.name for f in files} >= {"quickstart.toml", "cifar10-wrn.toml",
                                       "seed-ablations.toml"}
    for path in files:
        config = load_study(with_own_images(path, tmp_path))
        space = SearchSpace(config)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(60):
            trial = study.ask()
            sampled = space(trial)
            ModelConfig(**sampled["model"])  # never a network the builder rejects
            study.tell(trial, 0.5)


def test_space_is_conditional():
    config = parse_study(study("[space]\nfamily = ['wrn', 'resnet']\ndepth = [10, 14, 16, 20]\n"
                               "width = [2, 4]\noptimizer = ['adam', 'sgd']\n"
                               "momentum = { low = 0.8, high = 0.9 }\n"
                               "bn_position = ['before_add', 'after_add']"))
    space = SearchSpace(config)
    wrn_trial = FixedTrial(pick=0)
    wrn = space(wrn_trial)
    assert wrn["model"]["family"] == "wrn" and wrn["model"]["depth"] in (10, 16)
    assert wrn["model"]["width"] == 2
    assert wrn["train"]["optimizer"] == "adam"
    assert not any(n.startswith("momentum") for n in wrn_trial.names)  # adam has no momentum
    assert not any(n.startswith("bn_position") for n in wrn_trial.names)
    resnet_trial = FixedTrial(pick=1)
    resnet = space(resnet_trial)
    assert resnet["model"]["family"] == "resnet" and resnet["model"]["depth"] in (14, 20)
    assert resnet["model"]["width"] == 1  # k is a WRN parameter
    assert "momentum.sgd" in resnet_trial.names and resnet["train"]["momentum"] == 0.9
    assert "depth.resnet" in resnet_trial.names


def test_per_optimizer_ranges_sample_under_their_own_names():
    config = parse_study(study("[space]\noptimizer = ['sgd', 'adam']\n"
                               "lr.sgd = { low = 0.02, high = 0.3, log = true }\n"
                               "lr.adam = { low = 1e-4, high = 3e-3, log = true }\n"
                               "momentum = { low = 0.8, high = 0.9 }"))
    space = SearchSpace(config)
    sgd_trial, adam_trial = FixedTrial(pick=0), FixedTrial(pick=1)
    sgd, adam = space(sgd_trial)["train"], space(adam_trial)["train"]
    assert (sgd["optimizer"], sgd["lr"]) == ("sgd", 0.02) and "lr.sgd" in sgd_trial.names
    assert (adam["optimizer"], adam["lr"]) == ("adam", 3e-3) and "lr.adam" in adam_trial.names
    assert not any(n.startswith("lr.adam") for n in sgd_trial.names)
    assert "lr" not in sgd_trial.names + adam_trial.names


@pytest.mark.slow
def test_check_shows_per_optimizer_ranges_and_constraints(tmp_path):
    path = tmp_path / "cond.toml"
    path.write_text(GOOD + "optimizer = ['sgd', 'adam']\nlr.sgd = { low = 0.02, high = 0.3 }\n"
                    "lr.adam = [1e-3, 3e-3]\n[constraints]\nmax_params = 100000\n")
    result = cli("check", str(path), "--json")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    row = next(r for r in resolved["space"] if r["name"] == "lr")
    assert row["domain"] == "sgd: [0.02, 0.3]; adam: [0.001, 0.003]"
    assert "lr.sgd, lr.adam" in row["sampled"]
    assert resolved["constraints"]["max_params"] == 100000
    text = cli("check", str(path)).stdout
    assert "sgd: [0.02, 0.3]; adam: [0.001, 0.003]" in text and "max_params" in text


@pytest.mark.parametrize(
    ("study_text", "args", "message"),
    [
        (GOOD + "[data]\nsubset = 'all'\n", [], "[data] subset: 'all' must be an integer"),
        (GOOD, ["--tracking-uri", "http://127.0.0.1:9"],
         "tracking server http://127.0.0.1:9 is unreachable"),
        (GOOD, ["--tracking-uri", "postgresql://nobody@127.0.0.1:9/none"],
         "tracking database postgresql://nobody@127.0.0.1:9/none is unreachable"),
        (GOOD + '[data]\ndataset = "cifar10"\nroot = "/nonexistent"\n', [],
         "dataset 'cifar10' not found"),
        (GOOD + "[constraints]\nmax_params = 1000\n", [],
         "[constraints] max_params: 1000 is below every network of [space]"),
        (GOOD.replace("num_samples = 2", "num_samples = 2\nobjectives = ['val_accuracy', 'parms']"),
         [], "[study] objectives[1]: 'parms' is not one of params, flops, latency_ms"),
        (GOOD, ["--name", "a/b"],  # the flag's fault, not the file's
         "error: --name 'a/b': must be printable, without slashes, ':' or shell"),
    ],
    ids=["type", "unreachable-server", "unreachable-database", "missing-dataset",
         "constraint-below-every-network", "unknown-objective", "bad-name-flag"],
)
def test_run_rejects_bad_input_with_exit_2_and_starts_nothing(tmp_path, study_text, args, message):
    path = tmp_path / "bad.toml"
    path.write_text(study_text)
    home = tmp_path / "home"
    result = cli("run", str(path), *args, env={"RESNET_SEARCH_HOME": str(home)})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("resnet-search")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (home / "ray_results").exists()


def test_a_home_folder_that_cannot_be_made_is_blamed_on_resnet_search_home(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    (tmp_path / "a-file").write_text("a file, not a folder")
    home = tmp_path / "a-file" / "home"
    result = cli("run", str(path), env={"RESNET_SEARCH_HOME": str(home)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot create its folder {home}" in lines[0], lines[0]
    assert lines[0].endswith(f"it is under RESNET_SEARCH_HOME={home}: set that to a folder you "
                             f"can write"), lines[0]

    # A home whose default results folder cannot be made: not blamed on [storage] path.
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_results").write_text("a file, not a folder")
    result = cli("run", str(path), env={"RESNET_SEARCH_HOME": str(home)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"resnet-search: error: results folder {home / 'ray_results'} is not writable ("), lines
    assert lines[0].endswith(f"it is under RESNET_SEARCH_HOME={home}: set that to a folder you "
                             f"can write"), lines[0]


def test_resources_this_machine_cannot_provide_are_an_error_before_ray_starts(tmp_path):
    """A private Ray would have this machine's CPUs and GPUs: refused with nothing started.
    (A cluster's resources are checked once joined: tests/search/end_to_end/test_multinode.py.)"""
    # Ray's temp folder for these commands only: a Ray started anyway leaves a session there
    # (other tests may start Rays in the shared /tmp/ray meanwhile).
    ray_tmp = tmp_path / "ray-tmp"
    env = {"RESNET_SEARCH_HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(ray_tmp),
           "RAY_ADDRESS": None}
    path = tmp_path / "big.toml"
    path.write_text(GOOD + "[resources]\ncpus_per_trial = 64\n")
    result = cli("run", str(path), env=env)
    assert result.returncode == 2, result.stderr
    assert f"[resources] a trial needs 64 CPUs but this machine has {os.cpu_count()}" in result.stderr
    gpu = tmp_path / "gpu.toml"
    gpu.write_text(GOOD + "[resources]\ngpus_per_trial = 0.5\n")
    result = cli("run", str(gpu), env=env)
    if "GPU" not in result.stderr or result.returncode != 2:
        pytest.skip("this machine has a GPU") if _has_gpu() else pytest.fail(result.stderr)
    assert "gpus_per_trial=0.5 needs 0.5 GPUs but this machine has 0" in result.stderr
    assert not ray_tmp.exists(), "a Ray was started for a study it cannot run"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_readme_study_file_is_valid_as_written():
    import optuna

    readme = (ROOT / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_study(tomllib.loads(example), label="README.md")
    assert config.constraints.max_params and config.study.objectives  # the example shows them
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        try:
            ModelConfig(**SearchSpace(config)(trial)["model"])
        except InfeasibleArchitecture as over:  # the searcher resamples these
            assert over.cost["params"] > config.constraints.max_params or \
                over.cost["flops"] > config.constraints.max_flops
        study.tell(trial, 0.5)
