"""Imports Caffe's bvlc_alexnet (a .caffemodel) as a run folder, without Caffe.

`python -m alexnet_tf.convert CAFFEMODEL --workdir DIR [--mean imagenet_mean.binaryproto]`

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

import argparse
import sys
import warnings


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.convert", description=__doc__.splitlines()[0])
    parser.add_argument("caffemodel", help="e.g. bvlc_alexnet.caffemodel (Caffe's model zoo)")
    parser.add_argument("--workdir", required=True, help="run folder to write (new or empty)")
    parser.add_argument("--mean", help="Caffe's imagenet_mean.binaryproto (default: its per-channel mean)")
    args = parser.parse_args(argv)

    def _main():
        from alexnet_tf import caffe

        caffe.check_new_workdir(args.workdir)  # before the import's seconds, not after
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", caffe.ChecksumWarning)
            imported = caffe.import_caffemodel(args.caffemodel, args.mean)
        for w in caught:
            if issubclass(w.category, caffe.ChecksumWarning):
                print(f"warning: {w.message}", file=sys.stderr)
        checkpoint = caffe.write_run(imported, args.workdir)
        mean = args.mean or f"Caffe's per-channel mean {caffe.CAFFE_MEAN_BGR} (BGR)"
        print(f"imported {args.caffemodel} ({imported.format} format, sha1 {imported.sha1}) with mean {mean}")
        print(f"wrote {checkpoint}; evaluate it on ILSVRC-2012 val (centre crop, as Caffe's 57.1% / 80.2%):")
        print(
            f"  python -m alexnet_tf.evaluate recipes/paper.py --workdir {args.workdir} --crops center "
            "--set data.resize=warp"
        )

    return cli.run(_main)


if __name__ == "__main__":
    raise SystemExit(main())
