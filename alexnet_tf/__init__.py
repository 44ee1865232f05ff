"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in TensorFlow and Keras.

The library, for notebooks and scripts (importing it loads nothing heavy):

    net = alexnet_tf.load_net("runs/quickstart")   # a run folder, a checkpoint, a .caffemodel
    net.predict_images(images)                      # probabilities; output="features" for fc7
    model = alexnet_tf.AlexNet(weights="runs/quickstart", include_top=False)  # Keras Applications style

    config = alexnet_tf.load_recipe("paper")        # a recipe, as in recipes/
    config = alexnet_tf.override(config, ["train.batch_size=256"])
    alexnet_tf.train_and_evaluate(config, "runs/x")
    alexnet_tf.evaluate_nets([net], crops="ten")    # Table 2's measure
    alexnet_tf.export_saved_model(net, "exports/x/1")  # a SavedModel for TF Serving

The library's modules (training, evaluation, exporting, inference, applications, ...)
are never named like a command. The commands: `python -m alexnet_tf` lists them.
"""

import importlib
import sys

__version__ = "0.1.0"

# name -> module: the public API, imported when first used
_API = {
    "AlexNet": "alexnet_tf.applications",
    "load_net": "alexnet_tf.applications",
    "preprocess_input": "alexnet_tf.applications",
    "decode_predictions": "alexnet_tf.applications",
    "TrainedNet": "alexnet_tf.nets",
    "build_model": "alexnet_tf.model",
    "Config": "alexnet_tf.config",
    "ConfigError": "alexnet_tf.config",
    "load_recipe": "alexnet_tf.config",
    "override": "alexnet_tf.config",
    "train_and_evaluate": "alexnet_tf.training",
    "evaluate_nets": "alexnet_tf.evaluation",
    "export_saved_model": "alexnet_tf.exporting",
    "open_source": "alexnet_tf.data",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")


def __dir__():
    return sorted([*__all__, "__version__"])


def _running_a_command() -> bool:
    """True while `python -m alexnet_tf[.command]` starts (runpy imports this package
    first), never when a program or notebook imports the library."""
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv[:-1]:
        return False
    module = argv[argv.index("-m") + 1]
    return module == "alexnet_tf" or module.startswith("alexnet_tf.")


if _running_a_command():  # before TensorFlow loads: see alexnet_tf.console
    from alexnet_tf import console

    console.quiet()
