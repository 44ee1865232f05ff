"""What is in these pictures: a trained net's likeliest classes for image files, with
their readable names and probabilities (the library of `python -m alexnet_tf.predict`).

    files, missing = image_files(["cat.jpg", "photos/", "shots/*.png"])
    for path, top in label_files(net, files, top=5):
        print(path, top)          # [("n02123045", "tabby, tabby cat", 0.61), ...]

Each image is prepared as evaluation prepares it (`TrainedNet.predict_images`: the
net's resize, the centre crop or Sec. 4.1's ten crops, the mean subtracted); a file that
cannot be read or decoded is reported to `skip` and left out, the others go on.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from alexnet_tf.applications import decode_predictions
from alexnet_tf.nets import TrainedNet, _resized

# What a folder's images are: the formats `data.decode_and_resize` reads
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def image_files(inputs: Iterable[str]) -> tuple[list[str], list[str]]:
    """(files, inputs that name nothing) for image files, folders (their image files, in
    every subfolder, sorted) and glob patterns (`shots/*.png`, `**` for every subfolder),
    in the order given, each file once; paths as given, relative or absolute."""
    files, missing, seen = [], [], set()
    for given in inputs:
        if os.path.isdir(given):
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(given)
                for name in names
                if name.lower().endswith(IMAGE_SUFFIXES)
            )
        elif os.path.isfile(given):
            found = [given]
        else:
            found = sorted(p for p in glob.glob(given, recursive=True) if os.path.isfile(p))
        if not found:
            missing.append(given)
        for path in found:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, missing


def label_files(
    net: TrainedNet,
    files: Iterable[str],
    top: int = 5,
    crops: str = "center",
    batch_size: int = 32,
    skip: Callable[[str, str], None] = lambda path, why: None,
) -> Iterator[tuple[str, list[tuple[str, str, float]]]]:
    """(path, its `top` classes as `decode_predictions` gives them) for each readable file,
    in order, `batch_size` images through the net at a time; `skip(path, why)` for each
    file that cannot be read or is no JPEG, PNG, GIF or BMP image."""
    if top < 1 or batch_size < 1:
        raise ValueError(f"top and batch_size must be 1 or more, got {top} and {batch_size}")
    data = net.config.data
    paths, images = [], []

    def flush():
        probs = net.predict_images(np.stack(images), crops=crops, batch_size=batch_size)
        out = list(zip(paths, decode_predictions(probs, top=min(top, net.num_classes), net=net)))
        paths.clear()
        images.clear()
        return out

    for path in files:
        try:
            image = _resized(path, 0, data.resize_size, data.resize)  # (R, R, 3) uint8
        except OSError as e:
            skip(path, e.strerror or str(e))
            continue
        except ValueError:
            skip(path, "not a JPEG, PNG, GIF or BMP image")
            continue
        paths.append(path)
        images.append(image.numpy())
        if len(images) == batch_size:
            yield from flush()
    if images:
        yield from flush()
