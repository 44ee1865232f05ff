"""The paper's Fig. 3 and Fig. 4 for a trained run.

`python -m alexnet_tf.figures --workdir DIR --out DIR [--queries 5] [--neighbours 6]
[--train-examples 5000]`

fig3_conv1_kernels.png  the conv1 kernels; in the two-column net the first half feeds
                        column A (conv2's first group), the second half column B,
                        drawn side by side (Sec. 6.1, Fig. 3)
fig4_neighbours.png     eval images (left, framed) and the training images whose fc7
                        activations are nearest in Euclidean distance (Sec. 6.1, Fig. 4)
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import steps as steps_lib
from alexnet_tf.drawing import BACKGROUND, GAP, conv1_grid
from alexnet_tf.runs import TrainedRun, load_run


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def fc7_model(model: keras.Model) -> keras.Model:
    """The same weights, ending at fc7 (after its ReLU): the features of Fig. 4."""
    return keras.Model(model.inputs, model.get_layer("fc7").output)


def fc7_features(
    run: TrainedRun, split: str, count: int, batch: int = 64, stream=None
) -> tuple[np.ndarray, np.ndarray]:
    """fc7 activations (N, 4096) and the centre crops (N, c, c, 3) of the first `count` images."""
    source = data_lib.open_source(run.config.data.source)
    count = min(count, source.sizes[split])
    features = fc7_model(run.model)
    stats = steps_lib.stats_tensors(run.stats)

    @tf.function
    def forward(b):
        return features(data_lib.device_preprocess(b, stats, run.config.data), training=False)

    feats, crops = [], []
    ds = data_lib.eval_dataset(source, run.config.data, split, batch)
    for i, b in enumerate(ds.take(math.ceil(count / batch))):
        feats.append(forward(b).numpy())
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
    workdir: str, out: str, queries: int = 5, neighbours: int = 6, train_examples: int = 5000, stream=sys.stderr
) -> dict:
    """Writes both figures into `out`; returns {name: path} and the neighbour indices."""
    run = load_run(workdir)
    os.makedirs(out, exist_ok=True)
    kernel = run.model.get_layer("conv1").kernel.numpy()  # (11, 11, 3, 96)
    fig3 = os.path.join(out, "fig3_conv1_kernels.png")
    write_png(fig3, conv1_grid(kernel, columns=2 if run.config.model.two_columns else 1))

    d = run.config.data
    q_feats, q_images = fc7_features(run, d.eval_split, queries)
    p_feats, p_images = fc7_features(run, d.train_split, train_examples, stream=stream)
    index = nearest(q_feats, p_feats, neighbours)  # (Q, neighbours)
    fig4 = os.path.join(out, "fig4_neighbours.png")
    write_png(fig4, neighbours_grid(q_images, p_images[index]))
    return {"fig3": fig3, "fig4": fig4, "neighbours": index.tolist()}


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="run folder (newest checkpoint) or checkpoint prefix")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--queries", type=int, default=5, help="eval images in Fig. 4 (the paper shows 5)")
    parser.add_argument("--neighbours", type=int, default=6, help="neighbours per image (the paper shows 6)")
    parser.add_argument("--train-examples", type=int, default=5000, help="training images searched for neighbours")
    args = parser.parse_args(argv)

    def _main():
        paths = make_figures(args.workdir, args.out, args.queries, args.neighbours, args.train_examples)
        print(f"wrote {paths['fig3']} and {paths['fig4']}")

    return cli.run(_main)


if __name__ == "__main__":
    raise SystemExit(main())
