"""The paper's data statistics over a training set (Sec. 2 and 4.1), streaming.

    python -m alexnet_tf.stats --data SPEC --out DIR [--split train] [--size 256] [--limit N]

Writes the mean image (size x size x 3, pixel scale 0..255) and the eigenvalues and
eigenvectors of the 3x3 covariance of all RGB pixels (pixels scaled to [0, 1]) to the
DIR/stats.npz that `data.stats_path` (and `Stats.load`) reads. SPEC is a data spec or a
folder.
Unreadable files are skipped and listed.
"""

from __future__ import annotations

import os

from alexnet_tf import cli, runfolder

STATS_FILE = runfolder.STATS  # the name `data.stats_path` points to in a run folder too


def main(argv=None) -> int:
    p = cli.parser("stats", __doc__)
    cli.add_data(p)
    p.add_argument("--split", default="train", help="the split the statistics are of")
    p.add_argument("--size", type=int, default=256, help="image side after Sec. 2's resize and crop")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    cli.add_out(p, f"folder for {STATS_FILE}")
    return cli.main(p, _main, argv)


def _main(data: str | None, split: str, size: int, limit: int, out: str) -> None:
    # TensorFlow: loaded once the arguments parse
    import numpy as np

    from alexnet_tf import data as data_lib
    from alexnet_tf.report import Progress

    if not data:
        raise data_lib.DataError("give --data SPEC (folder:PATH, tfds:NAME, tfrecord:DIR) to compute statistics of")
    path = os.path.join(out, STATS_FILE)
    bad_files = data_lib.BadFiles()
    source = data_lib.open_source(data if ":" in data else "folder:" + data)
    images = data_lib.resized_images(source, split, size, bad_files)
    total = source.sizes[split]
    if limit:
        images, total = images.take(limit), min(limit, total)
    progress = Progress(total, f"stats {split}")
    stats = data_lib.compute_stats(images, size, progress=progress.update)
    progress.update(total, final=True)
    os.makedirs(out, exist_ok=True)
    stats.save(path)
    np.set_printoptions(precision=4, suppress=True)
    print(f"mean RGB {stats.mean_image.reshape(-1, 3).mean(0)}; eigval {stats.eigval}; eigvec columns\n{stats.eigvec}")
    message = bad_files.message()
    if message:
        print(message)
    print(f"wrote {path}; use it with --set data.stats_path={path}")


if __name__ == "__main__":
    cli.program(main)
