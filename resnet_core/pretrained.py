"""Starting from pretrained weights: `TrainConfig.init`, read, checked and loaded.

`init` is a file, a torchvision state dict or a resnet-search checkpoint (read with
`weights_only=True`: a file cannot run code), or "torchvision", torchvision's ImageNet weights
of the network through torchvision's weights API and torch hub's cache. The weights must fit
the network: every tensor by name and shape, except the classifier (the last linear layer),
which starts afresh when the file's has another number of classes. The input
standardisation the weights were trained with comes along (ImageNet's for torchvision's; a
checkpoint's own), and the run trains, records and serves with it.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_core.config import ModelConfig
from resnet_core.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

TORCHVISION = "torchvision"
# torchvision's ImageNet statistics (0..1 scale), what every one of its classifiers expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SHOWN = 3  # keys named in an error


class InitWeightsError(CheckpointError):
    """`init` names weights that cannot start this network; reads `init VALUE problem`."""

    def __init__(self, value: str, problem: str) -> None:
        super().__init__(f"init {value!r} {problem}")
        self.value = value
        self.problem = problem


@dataclass(frozen=True)
class StartingWeights:
    """What `init` gives a run: the tensors, and the standardisation they were trained with."""

    tensors: dict[str, torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # the init value


# ---------------------------------------------------------------- torchvision's weights


def torchvision_name(config: ModelConfig) -> str | None:
    """torchvision's name of this network (`resnet50`, `wide_resnet50_2`), or None."""
    if config.family != "imagenet-resnet" or config.stem != "imagenet" or config.shortcut != "B":
        return None
    names = {1: f"resnet{config.depth}", 2: f"wide_resnet{config.depth}_2"}
    name = names.get(config.width)
    return name if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                            "wide_resnet50_2", "wide_resnet101_2") else None


def torchvision_weights(config: ModelConfig) -> Any:
    """torchvision's default ImageNet weights enum entry of this network."""
    name = torchvision_name(config)
    if name is None:
        raise InitWeightsError(TORCHVISION, f"has no ImageNet weights for {config.name}: "
                                            f"torchvision has them for imagenet-resnet-18, -34, "
                                            f"-50, -101, -152, -50-2 and -101-2 (imagenet stem, "
                                            f"shortcut B)")
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT


def torchvision_file(config: ModelConfig) -> Path:
    """Where torch hub keeps those weights (`$TORCH_HOME/hub/checkpoints/FILE`)."""
    import torch

    url = torchvision_weights(config).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _torchvision_tensors(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights from the cache, downloaded there first (checksum checked) if missing."""
    import torch

    weights = torchvision_weights(config)
    path = torchvision_file(config)
    try:
        # Quiet: torch hub announces a download on stderr, and an error must stay one line.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return torch.hub.load_state_dict_from_url(weights.url, progress=False,
                                                      check_hash=True, weights_only=True,
                                                      map_location="cpu")
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash a RuntimeError
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        lines = str(getattr(error, "reason", error)).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        raise InitWeightsError(TORCHVISION, f"could not fetch {weights} of {config.name} from "
                                            f"{weights.url} ({reason}); place that file by hand "
                                            f"at {path}") from None


# ---------------------------------------------------------------- reading


def read_init(init: str, config: ModelConfig) -> StartingWeights:
    """The weights `init` names for a network of this config (not yet checked against it)."""
    if init == TORCHVISION:
        return StartingWeights(_torchvision_tensors(config), IMAGENET_MEAN, IMAGENET_STD, init)
    return _read_file(init)


def _read_file(init: str) -> StartingWeights:
    import torch

    path = Path(init).expanduser()
    if not path.is_file():
        raise InitWeightsError(init, "is not a file (a state dict or checkpoint's path, or "
                                     "\"torchvision\")")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InitWeightsError(init, "is not a state dict or a resnet-search checkpoint (it "
                                     "holds objects other than tensors and plain values, or is "
                                     "not a torch file)") from None
    except Exception as error:  # torn or foreign files fail in many ways
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InitWeightsError(init, f"cannot be read ({type(error).__name__}: {first})") from None
    if isinstance(loaded, dict) and "model" in loaded and "model_config" in loaded:
        from resnet_core.checkpoint import input_spec

        spec = input_spec(loaded)  # a checkpoint of ours: its own standardisation
        return StartingWeights(_tensors(loaded["model"], init), spec.mean, spec.std, init)
    # A bare state dict: torchvision's (or a model's saved like it), trained on ImageNet.
    return StartingWeights(_tensors(loaded, init), IMAGENET_MEAN, IMAGENET_STD, init)


def _tensors(state: Any, init: str) -> dict[str, torch.Tensor]:
    import torch

    if (not isinstance(state, dict) or not state
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                       for k, v in state.items())):
        raise InitWeightsError(init, f"is not a state dict (names -> tensors) or a "
                                     f"resnet-search checkpoint (it holds a "
                                     f"{type(state).__name__})")
    return state


# ---------------------------------------------------------------- fitting and loading


def classifier_name(model: nn.Module) -> str:
    """The module name of the network's head: its last linear layer (`fc`, `classifier`)."""
    from torch import nn

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear classifier")
    return names[-1]


def fitting_tensors(model: nn.Module, weights: StartingWeights, network: str
                    ) -> dict[str, torch.Tensor]:
    """The tensors of `weights` that the model takes: all of its own, the head's only when its
    shape fits (other classes: it starts afresh). Anything else raises InitWeightsError naming
    the first keys that do not fit."""
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in weights.tensors.items()}
    head = classifier_name(model) + "."
    missing = [k for k in own if k not in given and not k.startswith(head)]
    unexpected = [k for k in given if k not in own]
    shapes = [k for k in own if k in given and given[k] != own[k] and not k.startswith(head)]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if shapes:
        key = shapes[0]
        problems.append(f"{key} is {list(given[key])} there but {list(own[key])} in the network"
                        + (f" ({len(shapes)} shapes differ)" if len(shapes) > 1 else ""))
    if problems:
        raise InitWeightsError(weights.source, f"does not fit {network}: {'; '.join(problems)}")
    return {k: t for k, t in weights.tensors.items() if given[k] == own[k]}


def _first(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_starting_weights(model: nn.Module, weights: StartingWeights, network: str) -> None:
    """Copy the fitting tensors into the model (a head of other classes keeps its init)."""
    model.load_state_dict(fitting_tensors(model, weights, network), strict=False)


def check_init(init: str, config: ModelConfig) -> StartingWeights:
    """Read `init` and check it fits this network (built on the meta device: no weights)."""
    import torch

    from resnet_core.models import build_model

    weights = read_init(init, config)
    with torch.device("meta"):
        model = build_model(config)
    fitting_tensors(model, weights, config.name)
    return weights
