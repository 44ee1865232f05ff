"""The paper's Fig. 3 and Fig. 4 for a trained net.

`python -m alexnet_tf.figures --workdir DIR --out DIR [--data SPEC] [--queries 5]
[--neighbours 6] [--train-examples 5000]`

fig3_conv1_kernels.png  the conv1 kernels; in the two-column net the first half feeds
                        column A (conv2's first group), the second half column B,
                        drawn side by side (Sec. 6.1, Fig. 3)
fig4_neighbours.png     eval images (left, framed) and the training images whose fc7
                        activations are nearest in Euclidean distance (Sec. 6.1, Fig. 4)
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf.config import DataConfig
from alexnet_tf.drawing import BACKGROUND, GAP, conv1_grid
from alexnet_tf.evaluation import cropping
from alexnet_tf.nets import TrainedNet


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def fc7_features(
    net: TrainedNet, data: DataConfig, split: str, count: int, batch: int = 64, stream=None
) -> tuple[np.ndarray, np.ndarray]:
    """fc7 activations (N, 4096) and the centre crops (N, c, c, 3) of the first `count`
    images of `split` of `data`'s source, prepared as the net was trained."""
    source = data_lib.open_source(data.source, data)
    count = min(count, source.sizes[split])
    forward = tf.function(lambda b: net.predict(b, output="features"))
    feats, crops = [], []
    ds = data_lib.eval_dataset(source, data, split, batch)
    for i, b in enumerate(ds.take(math.ceil(count / batch))):
        feats.append(forward(data_lib.batch.inputs(b)).numpy())
        crops.append(b["image"].numpy())
        if stream is not None and (i + 1) % 20 == 0:
            print(f"fc7 features: {(i + 1) * batch}/{count} {split} images", file=stream, flush=True)
    return np.concatenate(feats)[:count], np.concatenate(crops)[:count]


def nearest(queries: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """Indices (Q, k) of the `k` rows of `pool` nearest to each query (Euclidean)."""
    d2 = (queries**2).sum(1)[:, None] - 2 * queries @ pool.T + (pool**2).sum(1)[None, :]  # (Q, P)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def neighbours_grid(query_images: np.ndarray, neighbour_images: np.ndarray) -> np.ndarray:
    """Fig. 4: one row per query, the query first (framed), then its neighbours."""
    q = neighbour_images.shape[0]
    size = query_images.shape[1]
    factor = max(1, math.ceil(96 / size))  # small crops enlarged to at least 96 px
    frame = 3
    rows = []
    for i in range(q):
        query = np.pad(_upscale(query_images[i], factor), [(frame, frame), (frame, frame), (0, 0)])
        query[:frame, :, :] = query[-frame:, :, :] = query[:, :frame, :] = query[:, -frame:, :] = (200, 30, 30)
        tiles = [
            np.pad(_upscale(n, factor), [(frame, frame), (frame, frame), (0, 0)], constant_values=BACKGROUND)
            for n in neighbour_images[i]
        ]
        row = [query, np.full((query.shape[0], 12, 3), BACKGROUND, np.uint8)]
        for t in tiles:
            row += [t, np.full((query.shape[0], GAP, 3), BACKGROUND, np.uint8)]
        rows.append(np.concatenate(row[:-1], axis=1))
        rows.append(np.full((GAP * 2, rows[-1].shape[1], 3), BACKGROUND, np.uint8))
    image = np.concatenate(rows[:-1], axis=0)
    return np.pad(image, [(8, 8), (8, 8), (0, 0)], constant_values=BACKGROUND)


def write_png(path: str, image: np.ndarray) -> None:
    tf.io.write_file(path, tf.io.encode_png(np.ascontiguousarray(image, np.uint8)))


def make_figures(
    net: TrainedNet,
    out: str,
    data: DataConfig | None = None,
    queries: int = 5,
    neighbours: int = 6,
    train_examples: int = 5000,
    stream=sys.stderr,
) -> dict:
    """Writes both figures into `out`; returns {name: path} and the neighbour indices.
    `data` (default: the net's own) gives the images of Fig. 4: its eval split's first
    `queries` against its train split's first `train_examples`."""
    os.makedirs(out, exist_ok=True)
    kernel = net.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, 96)
    if net.config.data.channel_order == "bgr":  # drawn in RGB whatever order the net reads
        kernel = kernel[:, :, ::-1]
    fig3 = os.path.join(out, "fig3_conv1_kernels.png")
    write_png(fig3, conv1_grid(kernel, columns=2 if net.config.model.two_columns else 1))

    # The net's own cropping, on the images of `data`.
    d = dataclasses.replace(data, **cropping(net.config.data)) if data else net.config.data
    source = data_lib.open_source(d.source, d)
    d = data_lib.resolve_splits(source, d)
    q_feats, q_images = fc7_features(net, d, d.eval_split, queries)
    p_feats, p_images = fc7_features(net, d, d.train_split, train_examples, stream=stream)
    index = nearest(q_feats, p_feats, neighbours)  # (Q, neighbours)
    fig4 = os.path.join(out, "fig4_neighbours.png")
    write_png(fig4, neighbours_grid(q_images, p_images[index]))
    return {"fig3": fig3, "fig4": fig4, "neighbours": index.tolist()}


def main(argv=None) -> int:
    from alexnet_tf import cli

    p = cli.parser("figures", __doc__)
    cli.add_workdir(p, "run folder (its newest readable checkpoint) or checkpoint", required=True)
    cli.add_data(p)
    cli.add_out(p, "folder for the PNGs")
    p.add_argument("--queries", type=int, default=5, help="eval images in Fig. 4 (the paper shows 5)")
    p.add_argument("--neighbours", type=int, default=6, help="neighbours per image (the paper shows 6)")
    p.add_argument("--train-examples", type=int, default=5000, help="training images searched for neighbours")
    return cli.main(p, _main, argv)


def _main(workdir: str, data: str | None, out: str, queries: int, neighbours: int, train_examples: int) -> None:
    from alexnet_tf.runs import load_net

    net = load_net(workdir)
    spec = dataclasses.replace(net.config.data, source=data, eval_split="") if data else None
    try:
        paths = make_figures(net, out, spec, queries, neighbours, train_examples)
    except data_lib.DataError as e:
        if data:
            raise
        # e.g. Caffe's bvlc_alexnet imported: its own data is ILSVRC-2012 through TFDS
        raise data_lib.DataError(
            f"Fig. 4 needs images, and the net's own data ({net.config.data.source}) cannot be read: give some "
            f"with --data folder:DIR (DIR/train/<class>/*, DIR/val/<class>/*); Fig. 3 is written to {out}. ({e})"
        ) from e
    print(f"wrote {paths['fig3']} and {paths['fig4']}")


if __name__ == "__main__":
    raise SystemExit(main())
