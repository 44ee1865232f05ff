"""The paper's Fig. 3 and Fig. 4 for a trained net.

`python -m alexnet_tf.figures --workdir DIR --out DIR [--data SPEC] [--queries 5]
[--neighbours 6] [--train-examples 5000] [--curves-only]`

training_curves.png     top-1/top-5 error (train, validation) and the learning rate by
                        epoch, the rate's cuts marked (Sec. 5), from the run's
                        history.json (needs matplotlib: pip install 'alexnet_tf[plots]')
fig3_conv1_kernels.png  the conv1 kernels; in the two-column net the first half feeds
                        column A (conv2's first group), the second half column B,
                        drawn side by side (Sec. 6.1, Fig. 3)
fig4_neighbours.png     eval images (left, framed) and the training images whose fc7
                        activations are nearest in Euclidean distance (Sec. 6.1, Fig. 4)
"""

from __future__ import annotations

import dataclasses
import os
import sys

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("figures", __doc__)
    cli.add_workdir(p, "run folder (its newest readable checkpoint) or checkpoint", required=True)
    cli.add_data(p)
    cli.add_out(p, "folder for the PNGs")
    p.add_argument("--queries", type=int, default=5, help="eval images in Fig. 4 (the paper shows 5)")
    p.add_argument("--neighbours", type=int, default=6, help="neighbours per image (the paper shows 6)")
    p.add_argument("--train-examples", type=int, default=5000, help="training images searched for neighbours")
    p.add_argument("--curves-only", action="store_true", help="draw only training_curves.png (no net, no data)")
    return cli.main(p, _main, argv)


def _curves(workdir: str, out: str, required: bool) -> None:
    """training_curves.png from the run's history; a one-line error when `required`
    and it cannot be drawn, else a note on standard error."""
    from alexnet_tf import curves
    from alexnet_tf.config import ConfigError

    try:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, curves.FILENAME)
        curves.write_curves(workdir, path)
        print(f"wrote {path}")
    except (FileNotFoundError, ImportError, ValueError) as e:
        if isinstance(e, ImportError):
            e = f"matplotlib is not installed: pip install 'alexnet_tf[plots]' ({e})"
        if required:
            raise ConfigError(f"no training curves: {e}") from None
        print(f"no training curves: {e}", file=sys.stderr)


def _main(
    workdir: str, data: str | None, out: str, queries: int, neighbours: int, train_examples: int, curves_only: bool
) -> None:
    from alexnet_tf.runfolder import RunFolder

    if curves_only or os.path.exists(RunFolder(workdir).history):  # imported nets have none
        _curves(workdir, out, required=curves_only)
    if curves_only:
        return
    # TensorFlow: loaded once the arguments parse
    from alexnet_tf import data as data_lib
    from alexnet_tf.applications import load_net
    from alexnet_tf.drawing import make_figures

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
    cli.program(main)
