"""JPEG folders to train from without a download, in the layout of `--data folder:DIR`
(OUT/train/<class>/, OUT/val/<class>/):

    python -m benchmarks.jpegs --out DIR [--images N]
        [--classes N | --from fashion_mnist[:DIR] | --from digits [--size 48]]

(from the clone's root). Without --from: generated photo-like 256 px JPEGs in OUT/train/
(as `python -m alexnet_tf.bench input` makes them), for `prepare` or `bench train --data
folder:OUT --repeat K` on a machine with no dataset. `--from fashion_mnist`:
Fashion-MNIST (Debian's `dataset-fashion-mnist`, or DIR) as coloured JPEGs, none of them
in the bundled subset; `--from digits`: the digits 0-9 rendered as MNIST's (Debian's
`fonts-dejavu-core`); both at --size px, with a quarter as many in OUT/val/: the
checks that a recipe learns on folders it has never seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alexnet_tf import cli
from alexnet_tf.bench.common import make_jpegs, usable_cores
from alexnet_tf.config import ConfigError
from alexnet_tf.data import DataError
from alexnet_tf.data.sources import fashion_mnist_source

FASHION_FIRST = {"train": 30_000, "val": 5_000}  # clear of the bundled subset's images (the first ~9,000)


def make_fashion_folder(folder: str, spec: str, train: int = 8000, size: int = 48, seed: int = 1) -> str:
    """Writes `train` Fashion-MNIST training images (from index 30,000) and a quarter as
    many test images (from index 5,000) as size x size JPEGs in the README's folder
    layout (OUT/{train,val}/<class>/), each in its own two random colours (the garment
    in one, the ground in the other): an easy 10-class problem in colour, at another
    size, with none of the bundled subset's images."""
    source = fashion_mnist_source(spec)
    names = [n.replace("/", "_").replace(" ", "_") for n in source.class_names]
    rng = np.random.default_rng(seed)
    for split, own, count in (("train", "train", train), ("val", "test", train // 4)):
        images, labels = source.arrays[own]
        first = FASHION_FIRST[split]
        for index in range(first, first + count):
            fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            grey = images[index, ..., :1].astype(np.float32) / 255
            rgb = (bg + (fg - bg) * grey).clip(0, 255).astype(np.uint8)
            out = os.path.join(folder, split, names[labels[index]])
            os.makedirs(out, exist_ok=True)
            picture = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
            picture.save(os.path.join(out, f"{index}.jpg"), quality=90)
    return folder


DIGIT_FONTS = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
)
FONT_FOLDER = "/usr/share/fonts/truetype/dejavu"  # Debian's fonts-dejavu-core


def make_digit_folder(folder: str, train: int = 8000, size: int = 28, seed: int = 2) -> str:
    """Writes `train` (and a quarter as many validation) size x size JPEGs of the digits
    0-9 in the README's folder layout: light, thin strokes on black, as MNIST's, in one of
    six DejaVu fonts at 16-23 px, shifted by up to 4 px, turned by up to 15 degrees, with
    a little noise. The kind of data on which a net that starts with small weights sits
    at chance for a long time."""
    fonts = [os.path.join(FONT_FOLDER, f + ".ttf") for f in DIGIT_FONTS]
    missing = [f for f in fonts if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{missing[0]} not found: install Debian's fonts-dejavu-core")
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", train // 4)):
        for i in range(count):
            label = int(rng.integers(10))
            font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(16, 24)))
            canvas = Image.new("L", (2 * size, 2 * size), 0)
            where = (size + int(rng.integers(-4, 5)), size + int(rng.integers(-4, 5)))
            ImageDraw.Draw(canvas).text(where, str(label), fill=int(rng.integers(180, 256)), font=font, anchor="mm")
            canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
            image = np.asarray(canvas.crop((size // 2, size // 2, size // 2 + size, size // 2 + size)), np.float32)
            image = (image + rng.normal(0, 8, image.shape)).clip(0, 255).astype(np.uint8)
            out = os.path.join(folder, split, str(label))
            os.makedirs(out, exist_ok=True)
            Image.fromarray(image).convert("RGB").save(os.path.join(out, f"{i}.jpg"), quality=90)
    return folder


def write_folder(
    out: str, *, images: int = 20_000, classes: int = 1000, source: str | None = None, size: int = 48
) -> dict:
    """Writes `images` JPEGs to `out` (for `prepare`, or `--data folder:OUT`): generated
    256 px images in `classes` class folders, or with `source` (`fashion_mnist[:DIR]`,
    `digits`) those as `size` px JPEGs in train/ and val/ (a quarter as many)."""
    start = time.perf_counter()
    if source == "digits":
        make_digit_folder(out, images, size)
    elif source:
        kind, _, folder = source.partition(":")
        if kind != "fashion_mnist":
            raise ConfigError(f"--from {source}: give fashion_mnist[:DIR] or digits")
        make_fashion_folder(out, folder, images, size)
    else:
        make_jpegs(out, count=images, classes=classes, processes=usable_cores())
    result = {
        "bench": "jpegs",
        "out": out,
        "from": source or "generated",
        "images": images,
        "classes": 10 if source else classes,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.jpegs`: `write_folder` with the command line's flags."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.jpegs", description=__doc__, formatter_class=cli.HelpFormatter
    )
    p.add_argument("--out", required=True, help="folder to write OUT/train/<class>/*.JPEG into")
    p.add_argument("--images", type=int, default=20_000, help="how many training images")
    p.add_argument("--classes", type=int, default=1000, help="number of class folders (the paper's net has 1000)")
    p.add_argument(
        "--from",
        dest="source",
        metavar="fashion_mnist[:DIR] | digits",
        help="Fashion-MNIST (Debian's dataset-fashion-mnist, or DIR) as coloured JPEGs, none of them in the "
        "bundled subset; or digits rendered as MNIST's (Debian's fonts-dejavu-core); train/ and val/ "
        "(a quarter as many)",
    )
    p.add_argument("--size", type=int, default=48, help="with --from: the JPEGs' side in px (digits: use 28)")
    return cli.main(p, write_folder, argv)


if __name__ == "__main__":
    sys.exit(main())
