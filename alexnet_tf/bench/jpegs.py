"""`bench jpegs`: JPEG folders to train from without a download: generated 256 px
images (the input benchmarks), or Fashion-MNIST as coloured JPEGs, or rendered digits
(checks that a recipe learns on folders it has never seen)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

from alexnet_tf.bench.common import usable_cores


def _write_jpeg(job: tuple) -> None:
    from PIL import Image

    path, size, seed, i = job
    rng = np.random.default_rng([seed, i])
    low = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.asarray(low, np.float32) + rng.normal(0, 10, (size, size, 3))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(
    folder: str, count: int = 512, size: int = 256, classes: int = 8, seed: int = 0, processes: int = 1
) -> str:
    """Writes `count` photo-like size x size JPEGs (smooth shapes plus grain, quality 90,
    about the bytes of an ImageNet image at 256 px) in a train/<class>/ layout, image i
    in class i % classes."""
    digits = max(2, len(str(classes - 1)))
    jobs = []
    for i in range(count):
        d = os.path.join(folder, "train", f"class{i % classes:0{digits}d}")
        os.makedirs(d, exist_ok=True)
        jobs.append((os.path.join(d, f"{i:07d}.JPEG"), size, seed, i))
    if processes > 1:
        with mp.get_context("fork" if sys.platform == "linux" else "spawn").Pool(processes) as pool:
            pool.map(_write_jpeg, jobs, chunksize=64)
    else:
        for job in jobs:
            _write_jpeg(job)
    return folder


FASHION_FIRST = {"train": 30_000, "val": 5_000}  # clear of the bundled subset's images (the first ~9,000)


def make_fashion_folder(folder: str, spec: str, train: int = 8000, size: int = 48, seed: int = 1) -> str:
    """Writes `train` Fashion-MNIST training images (from index 30,000) and a quarter as
    many test images (from index 5,000) as size x size JPEGs in the README's folder
    layout (OUT/{train,val}/<class>/), each in its own two random colours (the garment
    in one, the ground in the other): an easy 10-class problem in colour, at another
    size, with none of the bundled subset's images."""
    from PIL import Image

    from alexnet_tf.data.sources import fashion_mnist_source

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
    from PIL import Image, ImageDraw, ImageFont

    fonts = [os.path.join(FONT_FOLDER, f + ".ttf") for f in DIGIT_FONTS]
    missing = [f for f in fonts if not os.path.isfile(f)]
    if missing:
        from alexnet_tf.data import DataError

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


def bench_jpegs(
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
            from alexnet_tf.config import ConfigError

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
