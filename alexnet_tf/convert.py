"""Imports Caffe's bvlc_alexnet (a .caffemodel) as a run folder, without Caffe.

`python -m alexnet_tf.convert CAFFEMODEL --workdir DIR [--mean imagenet_mean.binaryproto]`

(In Python: `alexnet_tf.load_net("bvlc_alexnet.caffemodel")`, no folder needed.)

Writes DIR/config.json (the paper's net with Caffe's conventions: LRN alpha / n and k = 1,
inverted dropout, BGR input, images warped to 256x256, no colour noise), classes.json
(ILSVRC-2012's synsets, sorted: Caffe's labels and TFDS imagenet2012's), stats.npz (the
mean image of --mean, else Caffe's per-channel mean) and checkpoints/ckpt-0, which
evaluate, export and figures read like any trained run. Both of Caffe's file formats
(V1 and the current one). A file that is not bvlc_alexnet's net is refused, naming the
layer or blob shape that differs; weights other than the published file are imported
with a warning.
"""

from __future__ import annotations

import sys
import warnings

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("convert", __doc__)
    p.add_argument("caffemodel", help="e.g. bvlc_alexnet.caffemodel (Caffe's model zoo)")
    cli.add_workdir(p, "run folder to write (new or empty)", required=True)
    p.add_argument("--mean", help="Caffe's imagenet_mean.binaryproto (default: its per-channel mean)")
    return cli.main(p, _main, argv)


def _main(caffemodel: str, workdir: str, mean: str | None) -> None:
    # TensorFlow: loaded once the arguments parse
    from alexnet_tf import caffe
    from alexnet_tf.runs import check_new_workdir, write_net

    check_new_workdir(workdir)  # before the import's seconds, not after
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", caffe.ChecksumWarning)
        net = caffe.load_net(caffemodel, mean)
    for w in caught:
        if issubclass(w.category, caffe.ChecksumWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    checkpoint = write_net(net, workdir)
    print(f"imported {net.origin} with mean {mean or f'Caffe per-channel {caffe.CAFFE_MEAN_BGR} (BGR)'}")
    print(f"wrote {checkpoint}; evaluate it on ILSVRC-2012 val (centre crop, as Caffe's 57.1% / 80.2%):")
    print(f"  python -m alexnet_tf.evaluate --workdir {workdir} --crops center   # add --data folder:DIR if not TFDS")


if __name__ == "__main__":
    cli.program(main)
