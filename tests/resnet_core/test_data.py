"""Datasets in their official formats, splits, and the on-device loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from resnet_core.data import DataConfig, DatasetNotFoundError, Split, load_data
from resnet_core.loader import DeviceLoader, make_loaders


def test_cifar10_files_load_with_labels_and_layout(fake_datasets):
    data = load_data(DataConfig("cifar10", root=str(fake_datasets), val_size=10))
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 30)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.num_classes == 10 and data.flip and data.crop_padding == 4
    # The test split is the official test_batch, pixel for pixel, in CHW layout.
    with open(fake_datasets / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    first = torch.as_tensor(raw["data"][0].reshape(3, 32, 32))
    assert torch.equal(data.test.images[0], first)
    assert data.test.labels.tolist() == raw["labels"]


def test_cifar10_validation_is_carved_from_train_and_disjoint_from_it(fake_datasets):
    """By content: every training image of the files is in train or validation, never both."""
    data = load_data(DataConfig("cifar10", root=str(fake_datasets), val_size=10))
    rows = set()
    for i in range(1, 6):
        with open(fake_datasets / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as handle:
            rows |= {row.tobytes() for row in pickle.load(handle, encoding="latin1")["data"]}
    train = {image.numpy().tobytes() for image in data.train.images}
    val = {image.numpy().tobytes() for image in data.val.images}
    assert len(rows) == 100  # the files' random images are all distinct
    assert len(train) == 90 and len(val) == 10
    assert not train & val
    assert train | val == rows


def test_cifar100_uses_fine_labels(fake_datasets):
    data = load_data(DataConfig("cifar100", root=str(fake_datasets), val_size=10))
    assert data.num_classes == 100 and len(data.train) + len(data.val) == 60
    with open(fake_datasets / "cifar-100-python" / "test", "rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    assert data.test.labels.tolist() == raw["fine_labels"]


def test_svhn_mat_files_map_label_10_to_digit_0(fake_datasets):
    data = load_data(DataConfig("svhn", root=str(fake_datasets), val_size=5))
    raw = loadmat(str(fake_datasets / "svhn" / "test_32x32.mat"))
    expected = raw["y"].reshape(-1).astype(np.int64) % 10
    assert data.test.labels.tolist() == expected.tolist()
    assert torch.equal(data.test.images[3], torch.as_tensor(raw["X"][:, :, :, 3]).permute(2, 0, 1))
    assert not data.flip  # flipping digits changes them


def test_missing_dataset_says_where_it_looked_and_how_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_data(DataConfig("cifar10", root=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "--download" in message


def test_digits_splits_are_deterministic_and_disjoint():
    a = load_data(DataConfig("digits", split_seed=3))
    b = load_data(DataConfig("digits", split_seed=3))
    c = load_data(DataConfig("digits", split_seed=4))
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the test split never moves
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    # No image is in two splits (digits' 1797 images are all distinct), and none is lost.
    splits = [{img.numpy().tobytes() for img in split.images} for split in (a.train, a.val, a.test)]
    assert [len(s) for s in splits] == [len(a.train), len(a.val), len(a.test)]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])


    assert a.in_channels == 1 and a.image_size == (8, 8) and not a.flip and a.crop_padding == 1


def test_subset_and_val_size():
    data = load_data(DataConfig("digits", subset=100, val_size=200))
    assert len(data.train) == 100 and len(data.val) == 200
    with pytest.raises(ValueError, match="val_size=5000 must be smaller than the"):
        load_data(DataConfig("digits", val_size=5000))


def _split(n=10, channels=3, size=8):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size)
    return Split(images.contiguous(), torch.arange(n))


def test_loader_visits_every_image_once_per_epoch():
    loader = DeviceLoader(_split(10), 4, (0.0,) * 3, (1 / 255,) * 3, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    labels = torch.cat([y for _, y in loader])
    assert sorted(labels.tolist()) == list(range(10))
    assert len(loader) == 3
    # Normalisation: (x - 0) / (1/255 * 255) -> the raw value; images match labels.
    for images, y in loader:
        assert torch.equal(images[:, 0, 0, 0], y.float())


def test_ddp_ranks_see_disjoint_equal_shares():
    split = _split(11)
    shares = []
    for rank in range(2):
        loader = DeviceLoader(split, 2, (0.0,) * 3, (1.0,) * 3, shuffle=True, rank=rank,
                              world_size=2, generator=torch.Generator().manual_seed(7))
        shares.append(torch.cat([y for _, y in loader]).tolist())
    assert len(shares[0]) == len(shares[1]) == 5
    assert not set(shares[0]) & set(shares[1])


def test_random_crop_and_flip_move_pixels_but_keep_content():
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 3, 2] = 255  # one bright pixel, off-centre
    split = Split(images, torch.zeros(64, dtype=torch.int64))
    loader = DeviceLoader(split, 64, (0.0,), (1.0,), crop_padding=1, flip=True,
                          generator=torch.Generator().manual_seed(0))
    batch, _ = next(iter(loader))
    positions = {tuple(torch.nonzero(img[0] > 0.5)[0].tolist()) for img in batch}
    assert len(positions) > 4  # shifted and mirrored copies
    assert all(abs(r - 3) <= 1 for r, _ in positions)  # crops move by at most the padding
    assert any(c >= 4 for _, c in positions)  # flips mirror column 2 to column 5 (+-1)
    assert batch.shape == (64, 1, 8, 8)


def test_channels_last_batches_and_eval_loaders_are_plain(fake_datasets):
    data = load_data(DataConfig("cifar10", root=str(fake_datasets), val_size=10))
    train, val, test = make_loaders(data, 16, channels_last=True)
    images, _ = next(iter(train))
    assert images.is_contiguous(memory_format=torch.channels_last)
    a = torch.cat([x for x, _ in test])
    b = torch.cat([x for x, _ in test])
    assert torch.equal(a, b)  # no augmentation or shuffling outside training
    assert len(train) == 90 // 16  # drop_last keeps full batches only



@pytest.mark.gpu
def test_a_split_too_large_for_the_gpu_stays_on_the_host_and_gives_the_same_batches(monkeypatch):
    """Over DEVICE_DATA_SHARE of the GPU's free memory, a split stays in pinned host memory;
    its batches are the ones an on-device split gives (same draws, same augmentation)."""
    import resnet_core.loader as loader_module

    def batches() -> tuple[DeviceLoader, list[torch.Tensor]]:
        loader = DeviceLoader(_split(64, size=16), 16, (0.5,) * 3, (0.25,) * 3, device="cuda",
                              shuffle=True, crop_padding=2, flip=True,
                              generator=torch.Generator().manual_seed(3))
        return loader, [images.cpu() for images, _ in loader]

    on_device, expected = batches()
    monkeypatch.setattr(loader_module, "DEVICE_DATA_SHARE", 0.0)
    on_host, got = batches()
    assert on_device.images.is_cuda and not on_host.images.is_cuda and on_host.images.is_pinned()
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_a_split_on_the_cpu_is_kept_where_it_trains():
    loader = DeviceLoader(_split(10), 4, (0.0,) * 3, (1.0,) * 3)
    assert loader.storage == loader.device == torch.device("cpu")
