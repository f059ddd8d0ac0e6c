"""A plain JPEG decoded straight from its bytes by libjpeg-turbo, without Image.open.

For a small JPEG, Image.open costs about as much as the decode: the plugin parses every
marker in Python (it turns each quantisation table into a list of ints, collects the APP
segments, reads the file a few bytes at a time) and load() adds its tile bookkeeping
(benchmarks/RESULTS.md, "Image folder: decode cache"). `decode_plain_jpeg` reads only what
the decode needs from the header (the frame's size, bit depth and components) and hands the
bytes to libjpeg-turbo (through simplejpeg; Pillow's own decoder where that declines) at the
scale and with the settings that Image.open + draft + load would use, so the pixels are the
same bit for bit (tests/resnet_core/test_jpeg_direct.py checks it on baseline, progressive,
greyscale, subsampled, odd-sized and drafted files).

Anything else is left to Image.open (None is returned): EXIF (the orientation must be
read), CMYK/YCCK (Pillow inverts Adobe's CMYK), 12-bit, arithmetic-coded or lossless
frames, headers this walk does not understand, and ImageFile.LOAD_TRUNCATED_IMAGES set.
"""

from __future__ import annotations

SOI = b"\xff\xd8\xff"
# Huffman-coded 8-bit DCT frames that libjpeg decodes as Image.open's JPEG plugin would.
PLAIN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
# Every other start-of-frame marker (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frames).
OTHER_FRAMES = frozenset(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}
START_OF_SCAN = 0xDA
APP1 = 0xE1
EXIF_SIGNATURE = b"Exif\x00\x00"
MODES = {1: "L", 3: "RGB"}  # components -> Pillow's mode (and raw mode) for the frame
DRAFT_SCALES = (8, 4, 2, 1)


def plain_jpeg_header(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, mode) of a JPEG that `decode_plain_jpeg` can decode, else None."""
    if not data.startswith(SOI):
        return None
    frame = None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None  # junk between segments: Image.open's tolerant walk decides
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        segment = data[position + 4:position + 2 + length]
        if marker == START_OF_SCAN:
            return frame
        if marker in OTHER_FRAMES or (marker == APP1 and segment.startswith(EXIF_SIGNATURE)):
            return None
        if marker in PLAIN_FRAMES:
            if len(segment) < 6 or segment[0] != 8 or segment[5] not in MODES:
                return None
            height, width = (segment[1] << 8) | segment[2], (segment[3] << 8) | segment[4]
            if not width or not height:
                return None
            frame = (width, height, MODES[segment[5]])
        position += 2 + length
    return None


def draft_scale(width: int, height: int, target_width: int, target_height: int) -> int:
    """The DCT scale Pillow's JpegImageFile.draft picks: the largest of 1/8, 1/4, 1/2 and 1
    whose image still covers the target."""
    scale = min(width // target_width, height // target_height)
    return next((s for s in DRAFT_SCALES if scale >= s), 1)  # smaller than the target: 1


def decode_plain_jpeg(data: bytes, target_width: int, target_height: int):
    """The JPEG in `data` decoded at draft scale for the target size, as a PIL image; None
    when it is not a plain JPEG (see the module's docstring). Raises OSError for a damaged or
    truncated file, as Image.load does."""
    from PIL import ImageFile

    header = plain_jpeg_header(data)
    if header is None or ImageFile.LOAD_TRUNCATED_IMAGES:  # Pillow's padding of a cut file
        return None
    width, height, mode = header
    scale = draft_scale(width, height, target_width, target_height)
    size = ((width + scale - 1) // scale, (height + scale - 1) // scale)
    decoded = _decode_with_turbojpeg(data, mode, size)
    return decoded if decoded is not None else _decode_with_pillow(data, mode, size, scale)


def _decode_with_turbojpeg(data: bytes, mode: str, size: tuple[int, int]):
    """The image through TurboJPEG (simplejpeg), or None for Pillow's decoder to decide.

    Why not Pillow's decoder alone: the libjpeg-turbo that Pillow bundles asks the CPU for
    its SIMD features (three CPUID instructions) on every decode, and in a virtual machine
    each CPUID traps to the hypervisor: ~17 of the ~25 us that an 8x8 JPEG costs through
    Pillow here, against ~3.5 us through simplejpeg (benchmarks/RESULTS.md, "Image folder").
    The same libjpeg-turbo decoder at the same scale and settings gives the same pixels
    (tests/resnet_core/test_jpeg_direct.py). Anything it refuses strictly (a cut or damaged
    file, libjpeg's warnings that Pillow ignores) and a scale it would pick otherwise (it
    may choose an M/8 factor for a tiny image where Pillow takes 1/2^k) go to Pillow's
    decoder, so what decodes, and what fails with which message, is Pillow's.
    """
    import simplejpeg
    from PIL import Image

    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if mode == "L" else "RGB",
                                        min_width=size[0], min_height=size[1])
    except ValueError:
        return None
    if pixels.shape[:2] != (size[1], size[0]):
        return None
    return Image.frombuffer(mode, size, pixels, "raw", mode, 0, 1)


def _decode_with_pillow(data: bytes, mode: str, size: tuple[int, int], scale: int):
    """Pillow's libjpeg decoder, with the arguments ImageFile.load gives it after draft()."""
    from PIL import Image

    # Uninitialised (the decoder writes every pixel or we raise): Image.new's checks and
    # fill cost more than the core's allocation, ~9 of ~85 us for a small JPEG.
    image = Image.Image()._new(Image.core.new(mode, size))
    # The decoder and arguments ImageFile.load uses for the tile that draft() sets up.
    decoder = Image._getdecoder(mode, "jpeg", (mode, ""), (scale, 0))
    try:
        decoder.setimage(image.im, (0, 0, *size))
        consumed, status = decoder.decode(data)
    finally:
        decoder.cleanup()
    if consumed >= 0:  # the decoder wanted more bytes than the file holds
        raise OSError(f"image file is truncated ({len(data) - consumed} bytes not processed)")
    if status < 0:
        raise OSError(f"decoder error {status} when reading image file")
    return image
