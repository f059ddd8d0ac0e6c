"""One image file (or PIL image) becomes the network's pixels: the one way, at training and
at predict time alike.

EXIF orientation is applied; palette, alpha (over white), 16-bit and CMYK images are
converted; the image is resized to cover the target and centre-cropped. A plain JPEG is
decoded straight from its bytes (resnet_core.jpeg_direct), anything else through
Image.open: the same pixels either way. `prepared_pixels` gives them interleaved; the
cache's decode worker processes and prepare_image move them to planes.
"""

from __future__ import annotations

import io
import os

from resnet_core.jpeg_direct import decode_plain_jpeg

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Image.resize first reduce()s by whole factors while the box is this many times the
# target or more, then resamples: quality close to a full filter at a fraction of its cost.
REDUCING_GAP = 3.0
# EXIF orientations 5-8 turn the image by 90 degrees: width and height swap.
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
ORIENTATION_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM",
                         5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def prepared_pixels(image, height: int, width: int, channels: int) -> bytes:
    """The image as the network sees it, uint8 pixels interleaved as Pillow holds them:
    (height, width, channels) as bytes. Callers move them to planes with numpy (the cache's
    workers a whole chunk of images at once).

    Args:
        image: a file path or a PIL image.
        height, width: the target size.
        channels: 1 (greyscale) or 3 (RGB).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return _prepare(image, height, width, channels)
    return _prepare_file(image, height, width, channels)


def _prepare_file(path: str | os.PathLike, height: int, width: int, channels: int) -> bytes:
    """The pixels, interleaved, of the file read whole (one read, not Pillow's few bytes at a
    time): a plain JPEG decoded straight from the bytes, anything else opened by Pillow (the
    same pixels either way)."""
    from PIL import Image

    data = _read_whole(path)
    decoded = decode_plain_jpeg(data, width, height)
    if decoded is not None:  # no EXIF, so no orientation to apply
        return _resize_and_crop(_to_channels(decoded, channels), height, width).tobytes()
    try:
        opened = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise Image.UnidentifiedImageError(f"cannot identify image file {str(path)!r}") from None
    with opened:
        return _prepare(opened, height, width, channels)


def _read_whole(path: str | os.PathLike) -> bytes:
    """The file's bytes: os.read on a descriptor, a third of open().read()'s cost for a
    small file (no buffered reader, no text-mode checks), which matters at 10,000 files."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while part := os.read(descriptor, 1 << 22):
            parts.append(part)
    finally:
        os.close(descriptor)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _prepare(image, height: int, width: int, channels: int) -> bytes:
    """The pixels, interleaved: bytes, not the image, which may be the opened file's own
    (already at the target size and mode) that closes after this."""
    from PIL import Image

    # The EXIF orientation is read once (ImageOps.exif_transpose would parse it again):
    # from a JPEG's header before decoding, as drafting needs it; after decoding for
    # the other formats, whose EXIF may follow the pixels (PNG's eXIf chunk).
    orientation = _orientation(image) if image.format == "JPEG" else 1
    if image.format == "JPEG":
        # Decode a large JPEG at 1/2, 1/4 or 1/8 scale when that still covers the target.
        turned = orientation in TRANSPOSING_ORIENTATIONS
        image.draft(None, (height, width) if turned else (width, height))
    image.load()
    if image.format != "JPEG":
        orientation = _orientation(image)
    if orientation in ORIENTATION_TRANSPOSE:
        image = image.transpose(Image.Transpose[ORIENTATION_TRANSPOSE[orientation]])
    return _resize_and_crop(_to_channels(image, channels), height, width).tobytes()


def _orientation(image) -> int:
    orientation = image.getexif().get(0x0112, 1)
    return orientation if isinstance(orientation, int) else 1


def _to_channels(image, channels: int):
    from PIL import Image

    if image.mode in HIGH_DEPTH_MODES or image.mode == "F":
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        # 16-bit levels map onto 8-bit ones (65535 -> 255); float images are taken as 0..255.
        scaled = values / 257.0 if image.mode in HIGH_DEPTH_MODES else values
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        # Transparent pixels hold arbitrary colours: show them over white, as a viewer does.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)  # convert() would copy it


def _resize_and_crop(image, height: int, width: int):
    """Scaled to cover height x width and centre-cropped, in one resize of the centre box:
    no intermediate image, and the same scale on both axes (a resize of the whole image
    rounds each side to whole pixels)."""
    from PIL import Image

    w, h = image.size
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    # The side that decides the scale is the whole side: min() keeps rounding inside it.
    box_w, box_h = min(w, width / scale), min(h, height / scale)
    left, top = (w - box_w) / 2, (h - box_h) / 2
    box = (left, top, left + box_w, top + box_h)
    if image.mode in ("L", "RGB") and box_w < 2 * REDUCING_GAP * width \
            and box_h < 2 * REDUCING_GAP * height:
        # What Image.resize does for these modes when reducing_gap asks for no reduce()
        # first, without its Python checks (~5 us a small image; the same pixels: tested).
        return Image.Image()._new(image.im.resize((width, height),
                                                  Image.Resampling.BILINEAR, box))
    return image.resize((width, height), Image.Resampling.BILINEAR,
                        reducing_gap=REDUCING_GAP, box=box)


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a damaged, truncated or foreign file raises in Pillow's decoders."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_failure(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
