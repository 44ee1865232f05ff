"""The pixels that decoding an image will produce, read from its header before anything is decoded.

The formats are those `tf.io.decode_image` tells apart, by the same first bytes (the
order and magic of TensorFlow's ClassifyFileFormat, decode_image_op.cc): JPEG, PNG, GIF,
BMP, WebP. Anything else (JPEG XL included) and any header that cannot be read is
refused, so that no image is decoded whose size was not checked.

- JPEG: read here, as Pillow's JPEG reader walks it (`JpegImagePlugin`: the markers up to
  the first scan, junk and fill bytes skipped, the size of the last frame header), without
  parsing the tables on the way, which Pillow does in Python at about 20 us an image, the
  largest part of the server's own time per request. libjpeg reads the frame header too,
  and refuses a second one, so a large first one cannot hide behind a small last one.
- PNG, BMP, WebP: Pillow, which opens lazily and reads the header (PNG: the chunks up to the
  first IDAT, its text chunks within Pillow's MAX_TEXT_CHUNK and MAX_TEXT_MEMORY; WebP: the
  whole file, parsed but not decoded). Pillow refuses more than 2 x
  `PIL.Image.MAX_IMAGE_PIXELS` (179 M) pixels by itself: that becomes `ImageTooLarge`.
  BMP only with a header of 40 bytes or more, the one whose int32 width and height
  TensorFlow reads (it reads them so for every BMP; an OS/2 1.x header holds 16-bit ones).
- GIF: read here. giflib decodes every frame, each at its own size, which may exceed the
  logical screen; Pillow reads the extent of a later frame only by decoding the ones
  before it. A GIF counts its frames x the canvas that holds the screen and every frame.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

BMP_INFO_HEADER = 40  # BITMAPINFOHEADER and its successors: width, height as int32 at bytes 18, 22
# JPEG markers (the byte after 0xFF) as Pillow's JpegImagePlugin.MARKER has them: frame
# headers (SOF0-15 but DHT, JPG, DAC), and those without a length (JPG, RSTn, SOI, EOI, JPGn)
JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
JPEG_NO_LENGTH = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
JPEG_SOS = 0xDA
_U16, _SOF_SIZE = struct.Struct(">H"), struct.Struct(">HH")  # a segment's length; a frame's height, width
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than its reader opens."""


def image_format(data: bytes) -> str | None:
    """'JPEG', 'PNG', 'GIF', 'BMP' or 'WEBP' as `tf.io.decode_image` classifies `data`, else None."""
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) > 12:
        return "WEBP"
    return None


def image_pixels(data: bytes) -> int:
    """Pixels that `tf.io.decode_image(data, expand_animations=False)` decodes (GIF: all
    frames), read from the header. ValueError for bytes that are no such image or whose
    header cannot be read; `ImageTooLarge` for more pixels than Pillow opens."""
    kind = image_format(data)
    if kind is None:
        raise ValueError("not a JPEG, PNG, GIF, BMP or WebP image")
    if kind == "GIF":
        width, height, frames = _gif_size(data)
    elif kind == "JPEG":
        width, height, frames = _jpeg_size(data)
    else:
        width, height, frames = _pillow_size(data, kind)
    if width <= 0 or height <= 0 or frames <= 0:
        raise ValueError(f"the header declares {width} x {height} pixels and {frames} frames")
    return width * height * frames


def _pillow_size(data: bytes, kind: str) -> tuple[int, int, int]:
    if kind == "BMP" and (len(data) < 26 or struct.unpack("<I", data[14:18])[0] < BMP_INFO_HEADER):
        raise ValueError(f"a BMP whose header is shorter than {BMP_INFO_HEADER} bytes")
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"a {kind} header beyond Pillow's limit: {e}") from None
    except (OSError, SyntaxError, ValueError, struct.error) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(f"a {kind} whose header cannot be read ({type(e).__name__})") from None
    return width, height, 1


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, 1) of the last frame header before the first scan (or the end)."""
    pos, end, size = 2, len(data), None  # after SOI
    while pos < end:
        if data[pos] != 0xFF:  # junk between segments
            pos = data.find(b"\xff", pos + 1)
            if pos < 0:
                break
            continue
        if pos + 1 >= end:
            break
        marker = data[pos + 1]
        if marker in (0xFF, 0x00):  # a fill byte; an escaped 0xFF
            pos += 1 if marker == 0xFF else 2
            continue
        if marker < 0xC0:
            raise ValueError(f"a JPEG whose header cannot be read (no marker at byte {pos})")
        if marker in JPEG_NO_LENGTH:
            pos += 2
            continue
        length = _U16.unpack_from(data, pos + 2)[0] if pos + 4 <= end else -1
        if length < 2 or pos + 2 + length > end:
            raise ValueError("a JPEG whose header cannot be read (a truncated segment)")
        if marker == JPEG_SOS:
            break
        if marker in JPEG_SOF:
            if length < 8 or data[pos + 4] != 8 or data[pos + 9] not in (1, 3, 4):
                raise ValueError("a JPEG whose frame header is not of 8-bit, 1, 3 or 4 channels")
            height, width = _SOF_SIZE.unpack_from(data, pos + 5)
            size = width, height
        pos += 2 + length
    if size is None:
        raise ValueError("a JPEG without a frame header")
    return size[0], size[1], 1


def _gif_size(data: bytes) -> tuple[int, int, int]:
    """(canvas width, canvas height, frames); the LZW data is skipped, not decoded."""
    if len(data) < 13:
        raise ValueError("a truncated GIF header")
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + _gif_color_table(flags)
    frames = 0
    while pos < len(data) and data[pos] != 0x3B:  # up to the trailer (or the end: often missing)
        if data[pos] == 0x21:  # extension: a label, then sub-blocks
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif data[pos] == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                raise ValueError("a truncated GIF frame header")
            left, top, w, h, flags = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
            width, height, frames = max(width, left + w), max(height, top + h), frames + 1
            pos = _skip_gif_sub_blocks(data, pos + 10 + _gif_color_table(flags) + 1)  # +1: LZW code size
        else:
            raise ValueError(f"a GIF block of unknown type 0x{data[pos]:02x}")
    return width, height, frames


def _gif_color_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    raise ValueError("a truncated GIF")
