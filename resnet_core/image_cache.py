"""The decode cache of an image folder: every image decoded once, into one uint8 .npy.

CACHE/manifest.json says what the cache holds: the folder's image files with their sizes
and mtimes, layout, classes, labels and splits, the image shape, the files that could
not be decoded, and the names of two data files: images-<digest>.npy (N, C, H, W) and
stats-<digest>.npy (N, C, 2: each image's per-channel sum and sum of squares, from which
the mean and std of any training split follow without reading a pixel). A load whose
folder scan matches the manifest decodes nothing; a changed file, layout, image_size or
channels rebuilds it.

Writes are atomic: the data files first, under names of their content's digest, the
manifest last (temp file + rename), so a reader sees an old complete cache or a new
complete one, never a torn one. A lock file keeps two processes from decoding one
folder at once: the second waits, then finds the cache fresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_core.dataset_types import DataConfigError, OwnDataSettings
from resnet_core.decode_workers import decode_in_processes
from resnet_core.image_folder import (
    FolderListing,
    decode_errors,
    decode_failure,
    default_image_size,
    folder_root,
    prepare_image,
    probe_image,
    scan_folder,
    unreadable_error,
)

FORMAT = 1
CACHE_FOLDER = ".resnet-search-cache"
MANIFEST = "manifest.json"
CHUNK = 32  # images per task: few enough tasks to keep the pool's overhead small
# A worker process's chunk: each costs the parent a round trip and a statistics call
# (~0.5 ms), and 128 small images are still only ~15 ms of a worker's time at the end.
PROCESS_CHUNK = 128
# Fewer files decode in threads: a worker process's start-up (~0.2 s) costs ~1,000 decodes.
PROCESSES_FROM = 1000


@dataclass(frozen=True)
class FolderCache:
    manifest: dict[str, Any]
    images: np.ndarray  # uint8 (N, C, H, W), memory-mapped; rows of unreadable files are zeros
    stats: np.ndarray  # float64 (N, C, 2): per image and channel, sum and sum of squares


def cache_folder(config: OwnDataSettings) -> Path:
    """Where the folder's cache lives: `cache_dir`, else DIR/.resnet-search-cache."""
    if config.cache_dir:
        return Path(config.cache_dir).expanduser().resolve()
    return folder_root(config.path) / CACHE_FOLDER


def decoder_version() -> str:
    """Part of the manifest: another Pillow or simplejpeg (their JPEG decoders) or resize
    rule rebuilds."""
    import PIL
    import simplejpeg

    return (f"pillow {PIL.__version__}; simplejpeg {simplejpeg.__version__}; bilinear resize "
            f"of the centre box; alpha over white")


def requested(config: OwnDataSettings) -> dict[str, Any]:
    size = list(config.image_size) if config.image_size else None
    return {"image_size": size, "channels": config.channels}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def staleness(manifest: dict[str, Any] | None, listing: FolderListing,
              config: OwnDataSettings) -> str | None:
    """None when the cache holds exactly this listing with these settings; else what changed."""
    if manifest is None:
        return "no cache yet"
    if manifest.get("decoder") != decoder_version():
        return f"decoded by {manifest.get('decoder')}, now {decoder_version()}"
    if manifest["requested"] != requested(config):
        before, now = manifest["requested"], requested(config)
        changed = [f"{key} {before[key]} -> {now[key]}" for key in now if before[key] != now[key]]
        return f"{', '.join(changed)} (unset: from the images)"
    if manifest["layout"] != listing.layout or manifest["classes"] != list(listing.classes):
        return f"layout or classes changed ({len(manifest['classes'])} -> {len(listing.classes)} classes)"
    old = {name: (size, mtime) for name, size, mtime in manifest["files"]}
    new = {name: (size, mtime) for name, size, mtime in listing.files}
    added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    modified = sum(1 for name in new.keys() & old.keys() if new[name] != old[name])
    if added or removed or modified:
        return f"{added} file(s) added, {removed} removed, {modified} modified"
    return None


def load_cache(config: OwnDataSettings, build: bool = True) -> FolderCache:
    """The folder's decoded images: read from a fresh cache, else decoded into a new one.

    `build=False` (a trial: the study's driver built the cache before any trial started)
    refuses to start a cache where none can be read: on a cluster, a node that does not see
    the driver's cache folder would otherwise decode the whole folder again on its own disk."""
    folder = cache_folder(config)
    if not build:
        _check_readable(folder)
    listing = scan_folder(config.path, skip=folder)
    for _ in range(3):  # a rebuild by another process may replace the files between reads
        manifest = read_manifest(folder)
        if staleness(manifest, listing, config) is not None:
            break
        with contextlib.suppress(FileNotFoundError):
            return _open(folder, manifest, config)
    with _build_lock(folder):
        manifest = read_manifest(folder)
        if staleness(manifest, listing, config) is not None:
            manifest = _build(listing, config, folder)
        return _open(folder, manifest, config)


def _check_readable(folder: Path) -> None:
    try:
        json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        # The reason alone: an OSError's text repeats the (long) path the message names.
        why = error.strerror if isinstance(error, OSError) and error.strerror else \
            decode_failure(error)
        raise DataConfigError(
            f"cannot read the image cache {folder} on this node ({why}); the study's driver "
            f"built it there: every node must see that folder (put [storage] path, or "
            f"cache_dir, on storage that all nodes mount)") from None


def _open(folder: Path, manifest: dict[str, Any], config: OwnDataSettings) -> FolderCache:
    if manifest["unreadable"] and not config.skip_unreadable:
        raise unreadable_error(Path(manifest["root"]), manifest["unreadable"],
                               len(manifest["files"]))
    images = np.load(folder / manifest["images"], mmap_mode="r")
    stats = np.load(folder / manifest["stats"])
    return FolderCache(manifest, images, stats)


def check_cache_writable(folder: Path) -> None:
    """Said before anything is built (by `check` too): a cache folder that cannot be made,
    because a file stands where a folder must be or the file system is read-only."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK):
        why = f"{existing} is read-only"
    else:
        return
    raise DataConfigError(f"cannot write the image cache in {folder} ({why}); set cache_dir to "
                          f"a writable folder")


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    check_cache_writable(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a")  # noqa: SIM115 (held for the whole build)
    except OSError as error:
        raise DataConfigError(f"cannot write the image cache in {folder} ({decode_failure(error)});"
                              f" set cache_dir to a writable folder") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): concurrent builds still write atomically
        fcntl = None
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- shape


_SHAPES: dict[tuple, tuple[int, int, int]] = {}


def resolve_shape(listing: FolderListing, config: OwnDataSettings) -> tuple[int, int, int]:
    """(channels, height, width) the images become; unset settings come from the headers
    (no decode), remembered per listing for the rest of the process."""
    if config.image_size and config.channels:
        return (config.channels, *config.image_size)
    key = (listing.root, listing.files, config.image_size, config.channels,
           config.skip_unreadable)
    if key not in _SHAPES:
        _SHAPES[key] = _probe_shape(listing, config)
    return _SHAPES[key]


def _probe_shape(listing: FolderListing, config: OwnDataSettings) -> tuple[int, int, int]:
    paths = [listing.root / name for name, _, _ in listing.files]
    with ThreadPoolExecutor(_workers()) as pool:
        probes = list(pool.map(_probe_or_failure, paths))
    failures = [(name, probe) for (name, _, _), probe in zip(listing.files, probes, strict=True)
                if isinstance(probe, str)]
    if failures and (not config.skip_unreadable or len(failures) == len(paths)):
        raise unreadable_error(listing.root, failures, len(paths))
    readable = [probe for probe in probes if not isinstance(probe, str)]
    size = config.image_size or default_image_size((h, w) for h, w, _ in readable)
    channels = config.channels or (1 if all(grey for _, _, grey in readable) else 3)
    return (channels, *size)


def _probe_or_failure(path: Path) -> tuple[int, int, bool] | str:
    try:
        return probe_image(path)
    except decode_errors() as error:
        return decode_failure(error)


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(16, cores or 1))


# ---------------------------------------------------------------- build


def _build(listing: FolderListing, config: OwnDataSettings, folder: Path) -> dict[str, Any]:
    shape = resolve_shape(listing, config)
    digest = hashlib.sha256(json.dumps([listing.files, shape, decoder_version()]).encode())
    names = {"images": f"images-{digest.hexdigest()[:16]}.npy",
             "stats": f"stats-{digest.hexdigest()[:16]}.npy"}
    tmp = _temp_path(folder, names["images"])
    try:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(len(listing.files), *shape))
        stats = np.zeros((len(listing.files), shape[0], 2))
        failures = _decode_all(listing, shape, images, stats, tmp)
        if failures and not config.skip_unreadable:
            raise unreadable_error(listing.root, failures, len(listing.files))
        if len(failures) == len(listing.files):
            raise DataConfigError(f"none of the {len(failures)} images in {listing.root} "
                                  f"can be decoded (e.g. {failures[0][0]}: {failures[0][1]})")
        images.flush()
        del images
        os.replace(tmp, folder / names["images"])
    finally:
        Path(tmp).unlink(missing_ok=True)
    _save_atomic(folder / names["stats"], lambda path: np.save(path, stats))
    manifest = _manifest(listing, config, shape, names, failures)
    _save_atomic(folder / MANIFEST, lambda path: Path(path).write_text(json.dumps(manifest)))
    _remove_unused(folder, {*names.values(), MANIFEST, ".lock"})
    return manifest


def _manifest(listing: FolderListing, config: OwnDataSettings, shape: tuple[int, int, int],
              names: dict[str, str], failures: list[tuple[str, str]]) -> dict[str, Any]:
    return {"format": FORMAT, "decoder": decoder_version(), "root": str(listing.root),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "requested": requested(config), "image_shape": list(shape),
            "layout": listing.layout, "classes": list(listing.classes),
            "files": [list(entry) for entry in listing.files], "labels": list(listing.labels),
            "splits": list(listing.splits), "unreadable": [list(f) for f in failures],
            "ignored": listing.ignored, **names}


def _decode_all(listing: FolderListing, shape: tuple[int, int, int], images: np.ndarray,
                stats: np.ndarray, array_path: str) -> list[tuple[str, str]]:
    """Decode every file into its row (in worker processes where there are enough files and
    cores, else in threads); returns the (file, reason) of those that failed."""
    failed_by_chunk: dict[int, list[tuple[str, str]]] = {}
    progress = _Progress(len(listing.files), f"decoding {len(listing.files)} images of "
                                             f"{listing.root}")
    done = 0
    rows = images.view(np.ndarray)  # the same memory, without np.memmap's cost per slice

    def finished(start: int, end: int, failed: list[tuple[str, str]]) -> None:
        nonlocal done
        _chunk_stats(rows, stats, start, end)
        failed_by_chunk[start] = failed
        done += end - start
        progress.update(done)

    workers = _workers()
    if workers > 1 and len(listing.files) >= PROCESSES_FROM:
        decode_in_processes(listing.root, [name for name, _, _ in listing.files], shape,
                            array_path, images.offset, workers, PROCESS_CHUNK, finished)
    else:
        _decode_in_threads(listing, shape, images, workers, finished)
    progress.close()
    # In the listing's order, as chunks from processes arrive in any.
    return [failure for start in sorted(failed_by_chunk) for failure in failed_by_chunk[start]]


def _decode_in_threads(listing: FolderListing, shape: tuple[int, int, int], images: np.ndarray,
                       workers: int, finished: Any) -> None:
    """Threads gain little (Pillow holds the GIL for most of a small image) but start at
    once: the way for folders too small to pay a worker process's start-up."""
    channels, height, width = shape
    files = listing.files
    errors = decode_errors()

    def decode_chunk(start: int) -> tuple[int, int, list[tuple[str, str]]]:
        failed = []
        end = min(start + CHUNK, len(files))
        for row in range(start, end):
            try:
                images[row] = prepare_image(listing.root / files[row][0], (height, width),
                                            channels)
            except errors as error:
                failed.append((files[row][0], decode_failure(error)))
        return start, end, failed

    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(decode_chunk, range(0, len(files), CHUNK)):
            finished(*result)


def _chunk_stats(images: np.ndarray, stats: np.ndarray, start: int, end: int) -> None:
    """Each image's per-channel sum and sum of squares: one numpy call per chunk, not per
    image."""
    block = images[start:end].reshape(end - start, images.shape[1], -1)
    stats[start:end, :, 0] = block.sum(2, dtype=np.float64)
    stats[start:end, :, 1] = np.einsum("ncp,ncp->nc", block, block, dtype=np.float64)


def _temp_path(folder: Path, name: str) -> str:
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp.npy")
    os.close(handle)
    return tmp


def _save_atomic(path: Path, write: Any) -> None:
    tmp = _temp_path(path.parent, path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _remove_unused(folder: Path, keep: set[str]) -> None:
    """Data files of earlier builds, and temp files of builds that were killed (builders hold
    the lock, so no other build is writing one now)."""
    for entry in folder.iterdir():
        if entry.name not in keep and entry.suffix == ".npy":
            entry.unlink(missing_ok=True)


class _Progress:
    """A one-line progress bar on stderr, only where stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.enabled = sys.stderr.isatty()
        self.shown_at = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.shown_at > 0.1 or done == self.total):
            self.shown_at = now
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({100 * done // self.total}%)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
