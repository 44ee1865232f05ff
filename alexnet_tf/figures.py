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

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("figures", __doc__)
    cli.add_workdir(p, "run folder (its newest readable checkpoint) or checkpoint", required=True)
    cli.add_data(p)
    cli.add_out(p, "folder for the PNGs")
    p.add_argument("--queries", type=int, default=5, help="eval images in Fig. 4 (the paper shows 5)")
    p.add_argument("--neighbours", type=int, default=6, help="neighbours per image (the paper shows 6)")
    p.add_argument("--train-examples", type=int, default=5000, help="training images searched for neighbours")
    return cli.main(p, _main, argv)


def _main(workdir: str, data: str | None, out: str, queries: int, neighbours: int, train_examples: int) -> None:
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
