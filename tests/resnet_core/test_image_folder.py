"""A folder of images as a dataset: layouts, splits, the decode cache, and its errors.

The folders are built from scikit-learn's digits (8x8, upscaled to 32x32), written as PNG
and JPEG, greyscale and RGB, with mixed-case extensions, a nested folder, a hidden file
and a README, the way users' folders look.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnet_core.image_cache as image_cache
from resnet_core import prepare_image
from resnet_core.data import (
    DataConfig,
    DataConfigError,
    DatasetNotFoundError,
    _digits_rows,
    describe_dataset,
    load_data,
    normalisation,
)

EXTENSIONS = (".png", ".PNG", ".Jpg", ".jpeg")  # every other file lossless


def digits(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32), labels): the first `per_class` digits of each class."""
    rows = _digits_rows()
    images = np.round(rows[:, :64].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    labels = rows[:, 64].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.kron(images[keep], np.ones((4, 4), np.uint8)), labels[keep]


def write_digits(root: Path, per_class: int, splits: dict[str, float] | None = None,
                 all_png: bool = False) -> dict[str, list[bytes]]:
    """DIR/d<k>/... (or DIR/<split>/d<k>/... with `splits`: split -> share); returns the
    pixels (as 32x32 greyscale bytes) of each lossless file by split."""
    images, labels = digits(per_class)
    lossless: dict[str, list[bytes]] = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        split = _split_of(i % per_class, per_class, splits)
        folder = root / (split or "") / f"d{label}" / ("nested" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        ext = ".png" if all_png else EXTENSIONS[i % len(EXTENSIONS)]
        picture = Image.fromarray(image, "L")
        if i % 3 == 0:
            picture = picture.convert("RGB")
        picture.save(folder / f"img{i}{ext}", quality=95)
        if ext.lower() == ".png":
            lossless.setdefault(split or "all", []).append(image.tobytes())
    (root / "README.txt").write_text("digits")
    first = root / (next(iter(splits)) if splits else "") / "d0"
    (first / ".DS_Store").write_bytes(b"\0")
    (first / "._img0.png").write_bytes(b"\0\5\26\7")  # macOS metadata, not an image
    return lossless


def _split_of(index: int, per_class: int, splits: dict[str, float] | None) -> str | None:
    if not splits:
        return None
    edge = 0.0
    for split, share in splits.items():
        edge += share * per_class
        if index < edge:
            return split
    return split


def grey(images: torch.Tensor) -> set[bytes]:
    """Each image as 32x32 greyscale bytes (RGB files hold three equal channels)."""
    return {image[0].numpy().tobytes() for image in images}


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every file the cache decodes, in order."""
    calls: list[Path] = []
    original = image_cache.prepare_image

    def counting(path, *args):
        calls.append(Path(path))
        return original(path, *args)

    monkeypatch.setattr(image_cache, "prepare_image", counting)
    return calls


def test_class_folders_split_stratified_and_disjoint_by_content(tmp_path):
    lossless = write_digits(tmp_path, per_class=20)
    data = load_data(DataConfig("folder", path=str(tmp_path)))
    assert data.class_names == tuple(f"d{k}" for k in range(10)) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (144, 16, 40)
    # Stratified: 20% of each class in test, 10% of the rest (1.6, so 1 or 2) in validation.
    assert torch.bincount(data.test.labels).tolist() == [4] * 10
    assert set(torch.bincount(data.val.labels).tolist()) == {1, 2}
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    splits = [grey(s.images) for s in (data.train, data.val, data.test)]
    assert [len(s) for s in splits] == [144, 16, 40]  # distinct images, none lost
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert set(lossless["all"]) <= splits[0] | splits[1] | splits[2]  # PNGs pixel for pixel
    assert data.crop_padding == 4 and data.flip  # 32 / 8
    # README.txt, .DS_Store and a hidden ._img0.png; not the cache folder.
    assert "ignored: 3 hidden or non-image" in describe_dataset(DataConfig("folder", path=str(tmp_path)))


def test_test_split_stays_put_while_split_seed_moves_validation(tmp_path):
    write_digits(tmp_path, per_class=10)
    a, b = (load_data(DataConfig("folder", path=str(tmp_path), split_seed=s, val_size=20,
                                 test_size=0.3)) for s in (0, 1))
    assert torch.equal(a.test.images, b.test.images) and len(a.test) == 30
    assert not torch.equal(a.val.images, b.val.images) and len(a.val) == 20


def test_split_folders_are_the_splits(tmp_path):
    lossless = write_digits(tmp_path, per_class=10, splits={"train": 0.6, "val": 0.2, "test": 0.2},
                            all_png=True)
    data = load_data(DataConfig("folder", path=str(tmp_path)))
    assert (len(data.train), len(data.val), len(data.test)) == (60, 20, 20)
    for split in ("train", "val", "test"):
        assert grey(getattr(data, split).images) == set(lossless[split])
    message = describe_dataset(DataConfig("folder", path=str(tmp_path)))
    assert "split folders test, train, val" in message and "ignored: 3" in message


def test_a_second_load_decodes_nothing_and_a_touched_file_rebuilds(tmp_path, decodes):
    write_digits(tmp_path, per_class=6)
    config = DataConfig("folder", path=str(tmp_path), image_size=16)
    first = load_data(config)
    assert len(decodes) == 60
    manifest = tmp_path / ".resnet-search-cache" / "manifest.json"
    built = manifest.stat().st_mtime_ns
    second = load_data(config)
    assert len(decodes) == 60 and manifest.stat().st_mtime_ns == built
    assert torch.equal(first.train.images, second.train.images)
    one = next(tmp_path.rglob("img7.*"))
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))
    assert "stale, will be rebuilt: 0 file(s) added, 0 removed, 1 modified" in describe_dataset(config)
    load_data(config)
    assert len(decodes) == 120
    killed = manifest.parent / ".images-0123.npy.x1.tmp.npy"  # a build killed half-way
    killed.write_bytes(b"\0" * 10)
    load_data(DataConfig("folder", path=str(tmp_path), image_size=[16, 20]))
    assert len(decodes) == 180
    assert len(list(manifest.parent.glob("images-*.npy"))) == 1  # older builds removed
    assert not killed.exists()


def test_shape_classes_and_statistics_come_without_decoding(tmp_path, decodes):
    write_digits(tmp_path, per_class=4)
    Image.new("L", (48, 40)).save(tmp_path / "d3" / "wide.png")  # one odd size
    config = DataConfig("folder", path=str(tmp_path))
    assert config.num_classes == 10
    assert config.image_shape == (3, 32, 32)  # most common size; some files are RGB
    assert "will be built" in describe_dataset(config)
    assert decodes == []
    data = load_data(config)
    mean, std = normalisation(config)
    pixels = data.train.images.double() / 255
    assert np.allclose(mean, pixels.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(std, pixels.std(dim=(0, 2, 3), correction=0).tolist(), atol=1e-6)
    assert (mean, std) == (data.mean, data.std) and len(decodes) == 41
    assert "fresh" in describe_dataset(config)


def test_defaults_greyscale_and_large_images_scaled_to_a_short_side_of_64(tmp_path):
    for k in range(2):
        (tmp_path / f"c{k}").mkdir()
        for i in range(3):
            Image.new("L", (300, 200), 40 * i).save(tmp_path / f"c{k}" / f"{i}.png")
    assert DataConfig("folder", path=str(tmp_path)).image_shape == (1, 64, 96)


def test_two_processes_building_at_once_decode_once(tmp_path, decodes):
    write_digits(tmp_path, per_class=5)
    config = DataConfig("folder", path=str(tmp_path))
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_data(config)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and len(decodes) == 50
    assert torch.equal(results[0].train.images, results[1].train.images)


@pytest.mark.parametrize("in_processes", [False, True], ids=["threads", "processes"])
def test_the_cache_holds_the_pixels_predict_makes(tmp_path, monkeypatch, decodes, in_processes):
    """Each row of the cache is what `prepare_image` (the one function predict and serving
    use) makes of its file, whether the build decoded in threads or in worker processes; a
    file that cannot be decoded is a row of zeros, named in the listing's order."""
    write_digits(tmp_path, per_class=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned: the worker must turn it as prepare_image does
    ramp = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))
    Image.fromarray(ramp, "L").convert("RGB").save(tmp_path / "d4" / "turned.jpg", exif=exif)
    # A photo, drafted at 1/8 and still slow: its chunk comes back after later ones.
    photo = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(photo, "RGB").save(tmp_path / "d0" / "a_photo.JPG")
    for bad in ("d0/a_broken.png", "d9/cut.jpg"):
        (tmp_path / bad).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if in_processes:
        monkeypatch.setattr(image_cache, "PROCESSES_FROM", 0)
        monkeypatch.setattr(image_cache, "_workers", lambda: 2)
        monkeypatch.setattr(image_cache, "PROCESS_CHUNK", 3)  # many chunks, answered in any order
    config = DataConfig("folder", path=str(tmp_path), image_size=[24, 20], channels=3,
                        skip_unreadable=True)
    cache = image_cache.load_cache(config)
    files = [name for name, _, _ in cache.manifest["files"]]
    assert [name for name, _ in cache.manifest["unreadable"]] == ["d0/a_broken.png", "d9/cut.jpg"]
    for row, name in enumerate(files):
        expected = (np.zeros((3, 24, 20), np.uint8) if name in ("d0/a_broken.png", "d9/cut.jpg")
                    else prepare_image(tmp_path / name, (24, 20), 3))
        assert np.array_equal(cache.images[row], expected), name
    assert (len(decodes) == 0) == in_processes, len(decodes)  # processes: none in this one
    pixels = cache.images.reshape(len(files), 3, -1).astype(np.float64)
    assert np.allclose(cache.stats[..., 0], pixels.sum(2))
    assert np.allclose(cache.stats[..., 1], (pixels**2).sum(2))


# ---------------------------------------------------------------- errors


def _single_class(root: Path) -> None:
    (root / "cats").mkdir()
    Image.new("L", (8, 8)).save(root / "cats" / "a.png")


def _empty_class(root: Path) -> None:
    write_digits(root, per_class=2)
    (root / "d9b").mkdir()
    (root / "d9b" / "notes.txt").write_text("no images here")


def _unknown_val_class(root: Path) -> None:
    write_digits(root, per_class=5, splits={"train": 0.6, "val": 0.4})
    (root / "val" / "ghost").mkdir()
    Image.new("L", (8, 8)).save(root / "val" / "ghost" / "a.png")


BAD_FOLDERS = {
    "missing": (lambda root: None, {}, DatasetNotFoundError, "not found"),
    "no classes": (lambda root: (root / "x.txt").write_text(""), {}, DataConfigError,
                   "no class folders in"),
    "one class": (_single_class, {}, DataConfigError, "one class folder ('cats')"),
    "empty class": (_empty_class, {}, DataConfigError, "d9b holds no images"),
    "unknown class": (_unknown_val_class, {}, DataConfigError, "class folder(s) 'ghost' that"),
    "val_size too big": (lambda root: write_digits(root, per_class=2), {"val_size": 16},
                         DataConfigError, "val_size=16 of"),
    "val_size beside val/": (lambda root: write_digits(root, 5, {"train": 0.6, "val": 0.4}),
                             {"val_size": 3}, DataConfigError, "has its own val folder"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_folder_is_one_line_naming_it(tmp_path, case):
    make, settings, error, fragment = BAD_FOLDERS[case]
    root = tmp_path / "images"
    if case != "missing":
        root.mkdir()
        make(root)
    with pytest.raises(error) as raised:
        load_data(DataConfig("folder", path=str(root), **settings))
    message = str(raised.value)
    assert fragment in message and str(root) in message and "\n" not in message


def test_unreadable_images_are_named_or_skipped_and_counted(tmp_path):
    write_digits(tmp_path, per_class=5)
    (tmp_path / "d1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "d2" / "cut.jpg").write_bytes((tmp_path / "d2" / "img11.jpeg").read_bytes()[:200])
    with pytest.raises(DataConfigError) as raised:
        load_data(DataConfig("folder", path=str(tmp_path), image_size=32))
    message = str(raised.value)
    assert "2 of 52 images" in message and "d1/broken.png" in message and "d2/cut.jpg" in message
    assert "skip_unreadable = true" in message and "\n" not in message
    skipping = DataConfig("folder", path=str(tmp_path), image_size=32, skip_unreadable=True)
    data = load_data(skipping)
    assert len(data.train) + len(data.val) + len(data.test) == 50
    assert "unreadable: 2 skipped" in describe_dataset(skipping)
    with pytest.raises(DataConfigError, match="2 of 52 images"):  # the cache remembers them
        load_data(DataConfig("folder", path=str(tmp_path), image_size=32))


def test_a_trial_only_reads_the_cache_and_names_it_when_it_cannot(tmp_path, decodes):
    """Trials load with build_cache=False: the driver built the cache; a node that does not
    see its folder fails with one line naming it, and decodes nothing."""
    write_digits(tmp_path / "images", per_class=3)
    cache = tmp_path / "storage" / "data-cache" / "images-1234"
    config = DataConfig("folder", path=str(tmp_path / "images"), cache_dir=str(cache))
    with pytest.raises(DataConfigError) as raised:
        load_data(config, build_cache=False)
    message = str(raised.value)
    assert message.startswith(f"cannot read the image cache {cache} on this node (")
    assert "No such file or directory" in message and "\n" not in message
    assert decodes == [] and not cache.exists()
    built = load_data(config)  # the driver's load builds it
    assert len(decodes) == 30
    read = load_data(config, build_cache=False)
    assert len(decodes) == 30 and torch.equal(built.train.images, read.train.images)


def test_a_cache_folder_that_cannot_be_made_is_said_by_check_and_load(tmp_path, decodes):
    write_digits(tmp_path / "images", per_class=2)
    (tmp_path / "storage").write_text("a file where the cache's parent folder should be")
    cache = tmp_path / "storage" / "data-cache" / "images"
    config = DataConfig("folder", path=str(tmp_path / "images"), cache_dir=str(cache))
    for said_by in (describe_dataset, load_data):  # `check`, then `run`'s driver
        with pytest.raises(DataConfigError) as raised:
            said_by(config)
        assert str(raised.value) == (f"cannot write the image cache in {cache} ({tmp_path}/"
                                     f"storage is a file, not a folder); set cache_dir to a "
                                     f"writable folder")
    assert decodes == []


@pytest.mark.parametrize("settings, fragment", [
    ({"dataset": "folder"}, "path=None is required for dataset 'folder'"),
    ({"dataset": "digits", "path": "x"}, "path='x' applies to dataset folder or arrays only"),
    ({"dataset": "arrays", "path": "x.npz", "image_size": 32}, "applies to dataset folder only"),
    ({"dataset": "folder", "path": "x", "channels": 2}, "must be 1 (greyscale) or 3 (RGB)"),
    ({"dataset": "folder", "path": "x", "image_size": [1, 2, 3]}, "[height, width]"),
    ({"dataset": "folder", "path": "x", "val_size": 1.5}, "whole count >= 1 or a fraction"),
])
def test_bad_settings_are_refused_when_the_config_is_made(settings, fragment):
    with pytest.raises(ValueError) as raised:
        DataConfig(**settings)
    assert fragment in str(raised.value)


def test_a_read_only_folder_takes_a_cache_dir(tmp_path):
    write_digits(tmp_path / "images", per_class=3)
    config = DataConfig("folder", path=str(tmp_path / "images"), cache_dir=str(tmp_path / "c"))
    assert len(load_data(config).test) == 6
    assert (tmp_path / "c" / "manifest.json").is_file()
    assert not (tmp_path / "images" / ".resnet-search-cache").exists()
    # A cache folder among the class folders is not a class.
    inside = DataConfig("folder", path=str(tmp_path / "images"),
                        cache_dir=str(tmp_path / "images" / "cache"))
    assert load_data(inside).class_names == tuple(f"d{k}" for k in range(10))
    assert inside.num_classes == 10 and "ignored: 3 " in describe_dataset(inside)


@pytest.mark.slow
def test_a_wrn_trained_on_the_folder_classifies_its_test_split(tmp_path):
    """resnet_core's own loop on the folder's cached splits, checkpointed with its config."""
    from resnet_core.models import parse_model_name
    from resnet_core.train import TrainConfig, TrainingRun, fit

    write_digits(tmp_path, per_class=60)
    config = DataConfig("folder", path=str(tmp_path), image_size=16, channels=1, augment=False)
    run = TrainingRun.from_configs(parse_model_name("wrn-10-1"),
                                   TrainConfig(epochs=4, batch_size=32), config, "cpu")
    assert run.model_config.num_classes == 10 and run.model_config.in_channels == 1
    fit(run)
    _, accuracy = run.test()  # 120 test images; 0.95 measured (chance: 0.1)
    assert accuracy >= 0.85, accuracy
    assert run.state_dict()["data_config"]["path"] == str(tmp_path)


class _Terminal:
    """A stderr that says it is a terminal and keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_goes_to_a_terminal_only(tmp_path, capsys, monkeypatch):
    write_digits(tmp_path / "a", per_class=2)
    load_data(DataConfig("folder", path=str(tmp_path / "a")))
    assert capsys.readouterr().err == ""  # not a terminal: logs stay clean
    write_digits(tmp_path / "b", per_class=2)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    load_data(DataConfig("folder", path=str(tmp_path / "b")))
    assert f"decoding 20 images of {tmp_path / 'b'}: 20/20 (100%)\n" in terminal.text


def test_loads_during_rebuilds_see_whole_caches(tmp_path):
    """One process switches image_size back and forth (each switch rebuilds) while another
    loads: every load gets complete images of its own size, never a torn or foreign cache."""
    write_digits(tmp_path, per_class=2)
    problems: list[str] = []

    def load_many(sizes: list[int]) -> None:
        for size in sizes:
            try:
                data = load_data(DataConfig("folder", path=str(tmp_path), image_size=size,
                                            val_size=2, test_size=2))
            except Exception as error:  # noqa: BLE001 (any failure is the finding)
                problems.append(repr(error))
                continue
            if data.train.images.shape[2:] != (size, size) or len(data.train) != 16:
                problems.append(f"asked {size}, got {tuple(data.train.images.shape)}")

    threads = [threading.Thread(target=load_many, args=([16, 20] * 6,)),
               threading.Thread(target=load_many, args=([16] * 12,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
