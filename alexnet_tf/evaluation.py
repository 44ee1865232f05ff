"""Top-1 and top-5 error of trained nets, measured as in the paper's Table 2:
`evaluate_nets(nets, data, crops)`, which `python -m alexnet_tf.evaluate` calls.

Top-1 and top-5 error on a validation split, from the centre crop or from the softmax
averaged over the ten crops of Sec. 4.1 (four corners, the centre, and their
reflections). Several nets average their softmax outputs, like the paper's "5 CNNs" and
"7 CNNs" rows. Each net is prepared as it was trained (its run's resize, crop, mean
image).
"""

from __future__ import annotations

import sys

import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.config import ConfigError, DataConfig
from alexnet_tf.metrics import accumulate, correct, errors
from alexnet_tf.nets import TrainedNet
from alexnet_tf.report import Progress

# Table 2, ILSVRC-2012 validation set, error rates in %.
PAPER_TABLE2 = (
    ("paper: 1 CNN (ILSVRC-2012 val, 10 crops)", 40.7, 18.2),
    ("paper: 5 CNNs (ILSVRC-2012 val, 10 crops)", 38.1, 16.4),
)
# What the host cuts from each image: the nets of one evaluation must agree on it.
CROPPING = ("resize_size", "crop_size", "pad_crop", "resize")


def cropping(data: DataConfig) -> dict:
    """The settings of `data` that say what the host cuts from an image (CROPPING)."""
    return {k: getattr(data, k) for k in CROPPING}


def _check_cropping(nets: list[TrainedNet], data: DataConfig) -> None:
    """The nets were trained on images cut as `data` cuts them (CROPPING)."""
    wanted = cropping(data)
    for net in nets:
        for key, value in cropping(net.config.data).items():
            if value != wanted.get(key, value):
                raise ConfigError(
                    f"{net.origin} was trained with data.{key}={value!r} but the data config has "
                    f"{wanted[key]!r}; evaluate with the run's own config (no recipe) or --set data.{key}={value!r}"
                )


def evaluate_nets(
    nets: list[TrainedNet],
    data: DataConfig | None = None,
    crops: str = "ten",
    batch_size: int = 128,
    stream=sys.stderr,
) -> dict:
    """Top-1/top-5 error of one net, or of the average of several nets' softmax, on the
    eval split of `data` (its source, `eval_split` and `eval_examples`; default: the
    first net's own data), whose cropping must be the nets'."""
    if crops not in ("center", "ten"):
        raise ConfigError(f"crops must be 'center' or 'ten', got {crops!r}")
    if not nets:
        raise ConfigError("give at least one trained net (--workdir)")
    data = data or nets[0].config.data
    _check_cropping(nets, data)
    source = data_lib.open_source(data.source, data)
    data = data_lib.resolve_splits(source, data)
    for net in nets:
        if net.num_classes != source.num_classes:
            raise ConfigError(
                f"{net.origin} predicts {net.num_classes} classes but {data.source} has {source.num_classes}"
            )
    split = data.eval_split
    n = min(source.sizes[split], data.eval_examples or source.sizes[split])
    views = 10 if crops == "ten" else 1
    batch = max(1, batch_size // views)  # ten rows per image keep a batch near the same size
    bad_files = data_lib.BadFiles()
    ds = data_lib.eval_dataset(source, data, split, batch, crops, n, bad_files=bad_files)
    progress = Progress(n, "evaluated", quiet=stream is None, stream=stream)
    totals = accumulate(ds, ensemble_step(nets, views), progress.update)
    progress.update(int(totals["count"]), final=True)
    if totals["count"] == 0:
        raise data_lib.DataError(f"{data.source} split {split!r} gave no examples")
    if bad_files.message() and stream is not None:
        print(bad_files.message(), file=stream)
    return {
        **errors(totals),
        "crops": crops,
        "models": [net.origin for net in nets],
        "data": data.source,
        "split": split,
    }


def ensemble_step(nets: list[TrainedNet], views: int):
    """`step(batch)`: top-1/top-5 hits and count of one eval batch, from the softmax
    averaged over the `views` crops of each image (Sec. 4.1) and over the nets."""
    forwards = [tf.function(lambda b, net=net: net.predict(b, views)) for net in nets]

    def step(batch):
        inputs = data_lib.batch.inputs(batch)
        probs = tf.add_n([f(inputs) for f in forwards]) / len(forwards)  # (B, classes)
        labels, weight = batch["label"][::views], batch["weight"][::views]
        return {**correct(labels, probs, weight), "count": tf.reduce_sum(weight)}

    return step


def format_table(results: dict) -> str:
    """Our numbers under the paper's Table 2 rows (error rates in %)."""
    name = f"this run: {len(results['models'])} CNN{'s' if len(results['models']) > 1 else ''} "
    name += f"({results['data']} {results['split']}, {results['examples']} images, {results['crops']} crop"
    name += "s)" if results["crops"] == "ten" else ")"
    rows = [*PAPER_TABLE2, (name, 100 * results["top1_error"], 100 * results["top5_error"])]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model':<{width}}  top-1 err  top-5 err", "-" * (width + 22)]
    lines += [f"{r[0]:<{width}}  {r[1]:8.1f}%  {r[2]:8.1f}%" for r in rows]
    return "\n".join(lines)
