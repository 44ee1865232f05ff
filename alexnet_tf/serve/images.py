"""The pixels that decoding an image will produce, read from its header before anything is decoded.

The formats are those `tf.io.decode_image` tells apart, by the same first bytes (the
order and magic of TensorFlow's ClassifyFileFormat, decode_image_op.cc): JPEG, PNG, GIF,
BMP, WebP. Anything else (JPEG XL included) and any header that cannot be read is
refused, so that no image is decoded whose size was not checked.

- JPEG, PNG, BMP, WebP: Pillow, which opens lazily and reads the header (JPEG: the markers
  up to the first scan, whose frame header libjpeg reads too, and refuses a second one;
  PNG: the chunks up to the first IDAT, its text chunks within Pillow's MAX_TEXT_CHUNK and
  MAX_TEXT_MEMORY; WebP: the whole file, parsed but not decoded). Pillow refuses more than 2 x
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
