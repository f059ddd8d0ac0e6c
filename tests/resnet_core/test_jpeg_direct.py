"""A plain JPEG decoded straight from its bytes gives Image.open's pixels, bit for bit; the
files it cannot take are left to Image.open, and a damaged one fails as Pillow's does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from resnet_core.image_folder import decode_errors, prepare_image
from resnet_core.jpeg_direct import (
    _decode_with_turbojpeg,
    decode_plain_jpeg,
    draft_scale,
    plain_jpeg_header,
)


def jpeg(mode: str = "RGB", size: tuple[int, int] = (128, 96), **save) -> bytes:
    """A noisy gradient (noise makes the DCT and Huffman work as in a photo) as JPEG bytes."""
    width, height = size
    rng = np.random.default_rng(width * height)
    ramp = np.linspace(0, 200, width)[None, :] + np.linspace(0, 50, height)[:, None]
    pixels = ramp[..., None] + rng.normal(0, 20, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **{"quality": 90, **save})
    return buffer.getvalue()


def pillows_way(data: bytes, target: tuple[int, int]) -> Image.Image:
    """What Image.open + draft + load make of the bytes (the way every other file goes)."""
    image = Image.open(io.BytesIO(data))
    image.draft(None, target)
    image.load()
    return image


KINDS = {
    "baseline 4:2:0": jpeg(),
    "progressive": jpeg(progressive=True),
    "greyscale": jpeg("L"),
    "4:4:4": jpeg(subsampling=0),
    "4:2:2, odd size": jpeg(size=(131, 97), subsampling=1),
    "optimised tables": jpeg(optimize=True),
    "restart markers": jpeg(restart_marker_blocks=4),
    "photo, drafted at 1/8": jpeg(size=(640, 480)),
    "tiny, 1x1": jpeg(size=(1, 1)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", [(32, 32), (20, 24), (128, 96)])
def test_the_pixels_are_image_opens(kind, target):
    data = KINDS[kind]
    direct = decode_plain_jpeg(data, *target)
    expected = pillows_way(data, target)
    assert direct is not None, kind
    assert (direct.mode, direct.size) == (expected.mode, expected.size)
    assert direct.tobytes() == expected.tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", [(32, 32), (20, 24), (128, 96)])
def test_turbojpeg_decodes_every_plain_kind_itself(kind, target):
    """The fast path takes each of these files (Pillow's decoder is only the fallback), at
    Pillow's draft scale: the test above then compares TurboJPEG's pixels with Pillow's."""
    width, height, mode = plain_jpeg_header(KINDS[kind])
    scale = draft_scale(width, height, *target)
    size = ((width + scale - 1) // scale, (height + scale - 1) // scale)
    decoded = _decode_with_turbojpeg(KINDS[kind], mode, size)
    assert decoded is not None and (decoded.mode, decoded.size) == (mode, size)


def test_what_needs_image_open_is_left_to_it(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    left = {"EXIF (orientation)": jpeg(exif=exif), "CMYK": jpeg("CMYK"),
            "PNG": _png(), "not an image": b"\xff\xd8\xff but no segments"}
    for kind, data in left.items():
        assert plain_jpeg_header(data) is None, kind
        assert decode_plain_jpeg(data, 32, 32) is None, kind
    # prepare_image still turns the EXIF one and converts the CMYK one, through Image.open.
    (tmp_path / "turned.jpg").write_bytes(left["EXIF (orientation)"])
    assert prepare_image(tmp_path / "turned.jpg", (48, 24), 3).shape == (3, 48, 24)


def test_a_damaged_or_cut_jpeg_raises_what_the_cache_counts_as_unreadable(tmp_path):
    data = jpeg()
    cut = data[: len(data) // 2]
    with pytest.raises(OSError, match="truncated"):
        decode_plain_jpeg(cut, 32, 32)
    with pytest.raises(OSError):
        pillows_way(cut, (32, 32))  # Pillow refuses it too
    (tmp_path / "cut.jpg").write_bytes(cut)
    with pytest.raises(decode_errors()):
        prepare_image(tmp_path / "cut.jpg", 32, 3)


def test_prepare_image_of_a_plain_jpeg_file_is_that_of_the_opened_image(tmp_path):
    """The file path takes the direct decode; the same image handed over opened takes
    Pillow's way: the same array."""
    for i, data in enumerate(KINDS.values()):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(data)
        for channels in (1, 3):
            opened = Image.open(io.BytesIO(data))  # prepare_image drafts it, as a file's
            assert np.array_equal(prepare_image(path, 32, channels),
                                  prepare_image(opened, 32, channels)), (i, channels)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize("source", [(64, 48), (48, 64), (191, 96), (192, 192), (193, 500),
                                    (640, 480), (31, 20)])
def test_the_resize_is_image_resizes(mode, source):
    """The centre box resized without Image.resize's checks gives Image.resize's pixels: on
    both sides of the reduce() threshold (6x the target: 191, 192, 193 at 32) and upscaling."""
    from resnet_core.image_pixels import REDUCING_GAP, _resize_and_crop

    image = Image.open(io.BytesIO(jpeg(size=source))).convert(mode)
    height, width = 32, 32
    w, h = image.size
    scale = max(width / w, height / h)
    box_w, box_h = min(w, width / scale), min(h, height / scale)
    left, top = (w - box_w) / 2, (h - box_h) / 2
    expected = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP,
                            box=(left, top, left + box_w, top + box_h))
    resized = _resize_and_crop(image, height, width)
    assert (resized.mode, resized.size) == (expected.mode, expected.size)
    assert resized.tobytes() == expected.tobytes()
