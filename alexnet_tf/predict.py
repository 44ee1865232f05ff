"""What is in these pictures: a trained net's likeliest classes for image files.

`python -m alexnet_tf.predict IMAGE|DIR|GLOB ... --workdir NET [--top 5] [--crops center|ten] [--json]`

NET: a run folder (its newest readable checkpoint) or one checkpoint in it, Caffe's
bvlc_alexnet .caffemodel, or imagenet: the published bvlc_alexnet, fetched once into
Keras' cache folder (~/.keras/models; offline: put it there, or set
ALEXNET_TF_WEIGHTS=PATH). Each IMAGE is a file, a folder (every JPEG, PNG, GIF and BMP in
it and its subfolders) or a glob pattern, each image prepared as evaluation prepares it
for that net (its resize, the centre crop or Sec. 4.1's ten crops averaged, its mean
subtracted). Prints per image its --top classes, likeliest first, with probability,
readable name and class name; --json one JSON object per image and line. Files that
cannot be read or are no image are named on standard error and skipped.

In Python: alexnet_tf.load_net(NET).predict_images(...), or Keras Applications' way
(docs/predict.md): AlexNet(weights=NET), preprocess_input, decode_predictions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("predict", __doc__)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    cli.add_workdir(p, "the net: a run folder, a checkpoint, a .caffemodel, or imagenet", required=True)
    p.add_argument("--top", type=_positive, default=5, help="classes per image")
    p.add_argument("--crops", choices=("center", "ten"), default="center", help="centre crop or Sec. 4.1's 10 crops")
    p.add_argument("--batch-size", type=_positive, default=32, help="images through the net at a time")
    p.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per image and line")
    args = vars(p.parse_args(argv))  # --workdir as given: load_net resolves paths, "imagenet" is a name
    return cli.run(lambda: _main(**args))


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, got {text!r}")
    return value


def _main(images: list, workdir: str, top: int, crops: str, batch_size: int, as_json: bool) -> None:
    from alexnet_tf import labelling
    from alexnet_tf.data import DataError

    files, missing = labelling.image_files(images)
    for given in missing:
        _skipped(given, "no such file, or no image in it")
    if not files:
        raise DataError(f"no image files in {' '.join(images)}: give image files, folders or glob patterns")
    net = _load(workdir)
    labelled = 0
    for path, classes in labelling.label_files(net, files, top, crops, batch_size, _skipped):
        labelled += 1
        if as_json:
            entries = [{"class_name": n, "description": d, "probability": round(p, 6)} for n, d, p in classes]
            print(json.dumps({"image": path, "top": entries}, ensure_ascii=False), flush=True)
        else:
            print(path)
            for name, description, p in classes:
                print(f"  {100 * p:6.2f}%  {description}" + (f"  ({name})" if description != name else ""))
            sys.stdout.flush()
    if not labelled:
        raise DataError(f"none of the {len(files)} files could be read as an image")


def _load(workdir: str):
    """The net of --workdir; what fetching and importing print goes to standard error,
    so that standard output holds the predictions alone."""
    from alexnet_tf import caffe
    from alexnet_tf.applications import load_net
    from alexnet_tf.config import ConfigError

    if os.path.isfile(os.path.join(workdir, "saved_model.pb")) or any(
        os.path.isfile(os.path.join(workdir, v, "saved_model.pb")) for v in _listing(workdir)
    ):
        raise ConfigError(f"{workdir} is an export (a SavedModel, for serving): give the run folder it came from")
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("always", caffe.ChecksumWarning)
        net = load_net(workdir)
    for w in caught:
        if issubclass(w.category, caffe.ChecksumWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return net


def _listing(folder: str) -> list:
    return os.listdir(folder) if os.path.isdir(folder) else []


def _skipped(path: str, why: str) -> None:
    print(f"skipped {path}: {why}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
