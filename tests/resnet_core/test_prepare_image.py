"""One file becomes the network's pixels: formats, modes, orientation, resize and crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnet_core.image_folder import prepare_image


def stripes(width: int = 40, height: int = 20) -> np.ndarray:
    """Greyscale rows: the top quarter white, the rest 60 (orientation shows where it goes)."""
    pixels = np.full((height, width), 60, np.uint8)
    pixels[: height // 4] = 255
    return pixels


@pytest.mark.parametrize("name", ["a.png", "a.JPG", "a.bmp", "a.gif", "a.webp", "a.tif",
                                  "a.TIFF", "a.jpeg"])
def test_every_format_decodes_to_the_same_pixels(tmp_path, name):
    Image.fromarray(stripes(), "L").save(tmp_path / name)
    array = prepare_image(tmp_path / name, (20, 40), 1)
    assert array.shape == (1, 20, 40) and array.dtype == np.uint8
    tolerance = 8 if name.lower().endswith(("jpg", "jpeg", "webp")) else 0
    assert np.abs(array[0].astype(int) - stripes()).max() <= tolerance


def test_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (8, 8), value) for value in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert int(prepare_image(tmp_path / "a.gif", 8, 1).max()) == 10


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned 90 degrees clockwise
    Image.fromarray(stripes(), "L").save(tmp_path / "turned.jpg", exif=exif, quality=95)
    array = prepare_image(tmp_path / "turned.jpg", (40, 20), 1)[0]
    # The white top rows of the stored image are the right-hand columns of the shown one.
    assert array.shape == (40, 20)
    assert array[:, -3:].min() > 200 and array[:, :10].max() < 100


def test_palette_rgba_16_bit_and_cmyk_are_converted(tmp_path):
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    assert prepare_image(palette, 4, 3)[:, 0, 0].tolist() == [255, 0, 0]
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1], rgba[0, 0, 3] = 255, 255  # green, opaque at (0, 0) only
    array = prepare_image(Image.fromarray(rgba, "RGBA"), 4, 3)
    assert array[:, 0, 0].tolist() == [0, 255, 0] and array[:, 1, 1].tolist() == [255, 255, 255]
    deep = Image.fromarray(np.array([[0, 257 * 100], [65535, 257 * 7]], np.uint16))
    deep.save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    assert prepare_image(tmp_path / "deep.png", 2, 1)[0].tolist() == [[0, 100], [255, 7]]
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=100)
    red = prepare_image(tmp_path / "print.jpg", 4, 3)[:, 2, 2].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


def test_colour_becomes_grey_and_grey_becomes_three_equal_channels():
    colour = Image.new("RGB", (4, 4), (255, 0, 0))
    assert prepare_image(colour, 4, 1).shape == (1, 4, 4)
    assert int(prepare_image(colour, 4, 1)[0, 0, 0]) == 76  # ITU-R 601 luma of pure red
    grey = prepare_image(Image.new("L", (4, 4), 99), 4, 3)
    assert grey.shape == (3, 4, 4) and set(grey.reshape(-1).tolist()) == {99}


def test_resize_covers_the_target_and_crops_the_centre():
    pixels = np.zeros((100, 200), np.uint8)
    pixels[:, 30:170] = 255  # the middle of the width is white
    array = prepare_image(Image.fromarray(pixels, "L"), 10, 1)[0]
    # Shorter side 100 -> 10 (width 200 -> 20, white 3..17), centre crop of columns 5..15.
    assert array.shape == (10, 10) and array.min() > 250
    tall = prepare_image(Image.fromarray(pixels, "L"), (20, 10), 1)[0]
    assert tall.shape == (20, 10)  # covers 20 rows: 40 columns (white 6..34), centre 15..25
    assert tall.min() > 250


def test_a_large_jpeg_is_drafted_yet_comes_out_right(tmp_path):
    pixels = np.zeros((800, 800, 3), np.uint8)
    pixels[:400] = (250, 20, 20)  # top half red
    Image.fromarray(pixels, "RGB").save(tmp_path / "big.jpg", quality=95)
    array = prepare_image(tmp_path / "big.jpg", 16, 3).astype(int)
    assert array.shape == (3, 16, 16)
    assert array[0, :6].min() > 220 and array[1, :6].max() < 50 and array[:, 10:].max() < 30
