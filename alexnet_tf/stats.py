"""The paper's data statistics over a training set (Sec. 2 and 4.1), streaming.

    python -m alexnet_tf.stats SRC OUT.npz [--split train] [--size 256] [--limit N]

Writes the mean image (size x size x 3, pixel scale 0..255) and the eigenvalues and
eigenvectors of the 3x3 covariance of all RGB pixels (pixels scaled to [0, 1]) to the
.npz that `data.stats_path` (and `Stats.load`) reads. SRC is a data spec or a folder.
Unreadable files are skipped and listed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from alexnet_tf import cli
from alexnet_tf import data as data_lib
from alexnet_tf.report import Progress


def compute(
    spec: str,
    out: str,
    split: str = "train",
    size: int = 256,
    limit: int = 0,
    quiet: bool = False,
    bad_files: data_lib.BadFiles | None = None,
) -> data_lib.Stats:
    """Computes and saves the stats of `split` of `spec`; returns them. Unreadable files
    are skipped (and listed in `bad_files`)."""
    if ":" not in spec:
        spec = "folder:" + spec
    source = data_lib.open_source(spec)
    images = data_lib.resized_images(source, split, size, bad_files)
    total = source.sizes[split]
    if limit:
        images, total = images.take(limit), min(limit, total)
    progress = Progress(total, f"stats {split}", quiet)
    stats = data_lib.compute_stats(images, size, progress=progress.update)
    progress.update(total, final=True)
    stats.save(out)
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="data spec (folder:PATH, tfds:NAME, tfrecord:DIR) or a folder path")
    parser.add_argument("out", help="output .npz (use it with --set data.stats_path=OUT)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, default=256, help="image side after Sec. 2's resize and crop")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    args = parser.parse_args(argv)

    def run():
        bad_files = data_lib.BadFiles()
        stats = compute(args.src, args.out, args.split, args.size, args.limit, bad_files=bad_files)
        np.set_printoptions(precision=4, suppress=True)
        print(
            f"mean RGB {stats.mean_image.reshape(-1, 3).mean(0)}; eigval {stats.eigval}; eigvec columns\n{stats.eigvec}"
        )
        message = bad_files.message()
        if message:
            print(message)
        print(f"wrote {args.out}; use it with --set data.stats_path={args.out}")

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
