"""A trained net as a SavedModel for TF Serving and `tf.saved_model.load`.

`python -m alexnet_tf.export --workdir DIR --out EXPORT_DIR [--crops center|ten] [--overwrite]`

The SavedModel's signatures (JPEG/PNG bytes, uint8 pixels, TF Serving's Classify API; each
giving the top-5 classes) and its assets.extra files (classes.json, settings.json) are
described in `alexnet_tf.exporting`, which does the work, and in docs/serving.md; so is
the preprocessing of training that the SavedModel holds (Sec. 2's resize, the centre or
Sec. 4.1's ten crops, the mean image). An existing SavedModel at EXPORT_DIR is replaced
only with --overwrite.
"""

from __future__ import annotations

import os

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("export", __doc__)
    cli.add_workdir(p, "run folder (its newest readable checkpoint) or checkpoint", required=True)
    cli.add_out(p, "SavedModel folder to write, e.g. exports/alexnet/1", overwrite=True)
    p.add_argument("--crops", choices=("center", "ten"), default="center", help="centre crop or Sec. 4.1's 10 crops")
    return cli.main(p, _main, argv)


def _main(workdir: str, out: str, overwrite: bool, crops: str) -> None:
    # TensorFlow: loaded once the arguments parse
    from alexnet_tf.applications import load_net
    from alexnet_tf.exporting import export_saved_model

    net = load_net(workdir)
    export_saved_model(net, out, crops=crops, overwrite=overwrite)
    views = "ten crops" if crops == "ten" else "centre crop"
    print(f"exported {net.origin} ({views}) to {os.path.abspath(out)}")
    print(f"inspect with: saved_model_cli show --dir {out} --all")


if __name__ == "__main__":
    cli.program(main)
