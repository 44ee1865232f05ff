"""`python -m alexnet_tf` (or `alexnet-tf`): the commands, and each one's first line.

`python -m alexnet_tf COMMAND ARGS...` runs `python -m alexnet_tf.COMMAND ARGS...`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "train a recipe, or resume a run folder",
    "evaluate": "top-1/top-5 error of trained nets, centre or 10 crops (Table 2)",
    "export": "a trained net as a SavedModel for TF Serving",
    "serve": "a REST server speaking TF Serving's API",
    "figures": "Fig. 3 (conv1 kernels) and Fig. 4 (fc7 neighbours)",
    "convert": "Caffe's bvlc_alexnet .caffemodel as a run folder",
    "predict": "the top classes of image files, by a run, a .caffemodel or imagenet",
    "prepare": "a dataset as JPEG TFRecord shards of 256 px images",
    "stats": "the mean image and RGB covariance of a training set",
    "ablate": "the paper's ablations at small scale",
    "bench": "benchmarks of the product: train, input, export, serve",
}


def usage() -> str:
    from alexnet_tf import __version__

    lines = [f"alexnet_tf {__version__}: AlexNet (NIPS 2012) in TensorFlow and Keras", ""]
    lines += ["usage: python -m alexnet_tf COMMAND [ARGS...]  (or python -m alexnet_tf.COMMAND)", ""]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    lines += ["", "python -m alexnet_tf COMMAND -h shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from alexnet_tf import __version__

        print(f"alexnet_tf {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; the commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from alexnet_tf import console

    console.quiet()
    return importlib.import_module(f"alexnet_tf.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
