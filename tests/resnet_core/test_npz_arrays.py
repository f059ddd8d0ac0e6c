"""Images in a .npz file as a dataset (`dataset = "arrays"`), and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_core.data import (
    DataConfig,
    DataConfigError,
    DatasetNotFoundError,
    describe_dataset,
    load_data,
    normalisation,
)


def arrays(n_train: int = 60, n_test: int = 20, channels: int | None = 3, seed: int = 0,
           **extra: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (12, 10) if channels is None else (12, 10, channels)
    return {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": np.arange(n_train) % 3,
            "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": np.arange(n_test) % 3, **extra}


def save(tmp_path, **values: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **values)
    return str(path)


def test_channels_last_arrays_load_as_nchw_with_carved_stratified_validation(tmp_path):
    values = arrays(class_names=np.array(["cat", "dog", "emu"]))
    config = DataConfig("arrays", path=save(tmp_path, **values), val_size=0.2)
    data = load_data(config)
    assert data.class_names == ("cat", "dog", "emu") and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (48, 12, 20)
    assert torch.bincount(data.val.labels).tolist() == [4, 4, 4]
    assert data.train.images.shape[1:] == (3, 12, 10) and data.train.images.dtype == torch.uint8
    assert torch.equal(data.test.images[5], torch.as_tensor(values["x_test"][5]).permute(2, 0, 1))
    rows = {bytes(x) for x in values["x_train"].transpose(0, 3, 1, 2).reshape(60, -1)}
    train = {x.numpy().tobytes() for x in data.train.images}
    val = {x.numpy().tobytes() for x in data.val.images}
    assert not train & val and train | val == rows
    assert config.image_shape == (3, 12, 10) and config.num_classes == 3
    assert normalisation(config) == (data.mean, data.std)
    train_pixels = data.train.images.double() / 255
    assert np.allclose(data.mean, train_pixels.mean(dim=(0, 2, 3)).tolist())
    assert "3 classes (cat, dog, emu)" in describe_dataset(config)


def test_greyscale_arrays_and_a_given_validation_split(tmp_path):
    values = arrays(channels=None, x_val=np.zeros((7, 12, 10), np.uint8), y_val=np.arange(7) % 3)
    data = load_data(DataConfig("arrays", path=save(tmp_path, **values)))
    assert (len(data.train), len(data.val), len(data.test)) == (60, 7, 20)
    assert data.in_channels == 1 and data.class_names == ("0", "1", "2")
    assert torch.equal(data.val.labels, torch.arange(7) % 3)


def _float_images(values):
    values["x_train"] = values["x_train"].astype(np.float32) / 255
    return values


BAD_ARRAYS = {
    "missing arrays": (lambda v: {k: v[k] for k in ("x_train", "y_train")},
                       "lacks x_test, y_test (it holds x_train, y_train)"),
    "x_val alone": (lambda v: {**v, "x_val": v["x_test"]}, "lacks y_val"),
    "lengths": (lambda v: {**v, "y_train": v["y_train"][:-1]},
                "x_train holds 60 images but y_train 59 labels"),
    "float images": (_float_images, "x_train is float32; images must be uint8"),
    "channels first": (lambda v: {**v, "x_train": v["x_train"].transpose(0, 3, 1, 2).copy()},
                       "looks channels-first"),
    "shapes differ": (lambda v: {**v, "x_test": v["x_test"][:, :8]}, "every split must share"),
    "one class": (lambda v: {**v, "y_train": v["y_train"] * 0, "y_test": v["y_test"] * 0},
                  "the labels hold one class"),
    "short class_names": (lambda v: {**v, "class_names": np.array(["a", "b"])},
                          "class_names holds 2 names but the labels go up to 2"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_a_bad_npz_is_one_line_naming_it(tmp_path, case):
    broken, fragment = BAD_ARRAYS[case]
    path = save(tmp_path, **broken(arrays()))
    with pytest.raises(DataConfigError) as raised:
        load_data(DataConfig("arrays", path=path))
    message = str(raised.value)
    assert fragment in message and path in message and "\n" not in message


def test_built_in_datasets_are_described_too():
    assert describe_dataset(DataConfig("digits")) == (
        "digits (built in): 10 classes, 1x8x8 images (channels x height x width)")


def test_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="arrays file .*nothing.npz not found"):
        load_data(DataConfig("arrays", path=str(tmp_path / "nothing.npz")))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataConfigError, match="is not a readable .npz file"):
        load_data(DataConfig("arrays", path=str(tmp_path / "text.npz")))
