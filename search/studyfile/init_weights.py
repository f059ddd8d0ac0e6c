"""`[train] init`: the starting weights checked against every network the space can sample.

`check` and `run` read the file (or torchvision's weights, fetched into torch hub's cache
once) and build each network of the space on the meta device: weights that do not fit one
of them are one line naming the network and the first keys that do not fit, before any
trial starts. No Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from resnet_core import FAMILIES, ConfigValueError, ModelConfig, family
from search.studyfile.config import ConfigError, StudyConfig
from search.studyfile.space_rules import SpaceParam, family_blocks, valid_depths


def check_init(config: StudyConfig) -> None:
    """Raise ConfigError when `[train] init` cannot start a network of the space."""
    init = config.train.init
    if init is None:
        return
    from resnet_core import InitWeightsError
    from resnet_core import check_init as check_one  # torch: only a study with init pays it

    label = Path(config.path).name or "study"
    channels, _, _ = config.data.image_shape
    for model in space_networks(config.space, channels, config.data.num_classes):
        try:
            check_one(init, model)
        except InitWeightsError as error:
            raise ConfigError(f"{label}: [train] init: {error.value!r} {error.problem}") from None


def space_networks(space: dict[str, SpaceParam], in_channels: int, num_classes: int
                   ) -> Iterator[ModelConfig]:
    """Each network the space can sample, once per structure (family, block, depth, width,
    stem, shortcut); a range of widths by its ends."""
    widths = _values(space.get("width"))
    stems = _values(space.get("stem"))
    shortcuts = _values(space.get("shortcut"))
    seen: set[str] = set()
    for name in space["family"].candidates() or FAMILIES:
        entry = family(name)
        for block in family_blocks(entry, space.get("block")):
            for depth in valid_depths(name, block, space["depth"]):
                for width in widths if entry.has_width else (None,):
                    for stem in stems if entry.has_stem_choice else (None,):
                        for shortcut in shortcuts:
                            values = {"family": name, "depth": depth, "block": block,
                                      "width": width, "stem": stem, "shortcut": shortcut}
                            try:
                                model = ModelConfig(**{k: v for k, v in values.items()
                                                       if v is not None},
                                                    in_channels=in_channels,
                                                    num_classes=num_classes)
                            except ConfigValueError:  # a combination the sampler never builds
                                continue
                            if model.name not in seen:
                                seen.add(model.name)
                                yield model


def _values(param: SpaceParam | None) -> tuple:
    """A key's values in the space (None: not searched, the family's default)."""
    if param is None:
        return (None,)
    values = param.candidates()
    if values is not None:
        return values
    return tuple(dict.fromkeys((math.ceil(param.low), math.floor(param.high))))
