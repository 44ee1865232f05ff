"""The commands look alike (README, "Commands"): `python -m alexnet_tf` lists them, each
has --version and help with its defaults, the same flag names for the same things, and
importing the package as a library has no side effects."""

import importlib
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

from alexnet_tf.__main__ import COMMANDS

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# The flags with one meaning everywhere, and names that must not come back.
SHARED = ("--data", "--workdir", "--out", "--set")
RETIRED = ("--dataset", "--export-dir", "--output", "--run")


def help_of(command, capsys):
    module = importlib.import_module(f"alexnet_tf.{command}")
    with pytest.raises(SystemExit) as e:
        module.main(["-h"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_version_help_and_the_shared_flags(command, capsys):
    module = importlib.import_module(f"alexnet_tf.{command}")
    text = help_of(command, capsys)
    assert f"python -m alexnet_tf.{command}" in text
    # whole flags: --run is retired, --runtime (bench export's) is not
    assert not any(re.search(rf"{flag}(?![\w-])", text) for flag in RETIRED), text
    if command != "bench":  # bench's subcommands each have their own flags
        assert "--version" in text and "(default:" in text
        with pytest.raises(SystemExit) as e:
            module.main(["--version"])
        assert e.value.code == 0 and capsys.readouterr().out.startswith("alexnet_tf ")


def test_shared_flags_where_a_command_takes_that_thing(capsys):
    """A command that reads a run folder takes --workdir, one that reads data --data, one
    that writes files --out; never a positional path for those."""
    takes = {
        "train": {"--workdir", "--data", "--set"},
        "evaluate": {"--workdir", "--data", "--out", "--set"},
        "export": {"--workdir", "--out", "--overwrite"},
        "figures": {"--workdir", "--data", "--out"},
        "prepare": {"--data", "--out"},
        "stats": {"--data", "--out"},
        "ablate": {"--data", "--out", "--set"},
    }
    for command, flags in takes.items():
        text = help_of(command, capsys)
        assert all(flag in text for flag in flags), (command, text)


def test_package_lists_the_commands_and_refuses_unknown_ones():
    run = subprocess.run([sys.executable, "-m", "alexnet_tf"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0
    assert all(f"  {name}" in run.stdout for name in COMMANDS)
    bad = subprocess.run(
        [sys.executable, "-m", "alexnet_tf", "trian"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown command 'trian'")
    version = subprocess.run(
        [sys.executable, "-m", "alexnet_tf", "--version"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert version.stdout.startswith("alexnet_tf 0.")


def test_importing_the_library_has_no_side_effects():
    """No TensorFlow import, no filter process on standard error, a public API to find."""
    code = (
        "import os, sys\n"
        "before = os.readlink('/proc/self/fd/2')\n"
        "import alexnet_tf\n"
        "print('tensorflow' in sys.modules, 'alexnet_tf.console' in sys.modules)\n"
        "print(os.readlink('/proc/self/fd/2') == before)\n"
        "print(' '.join(dir(alexnet_tf)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    loaded, same_stderr, names = run.stdout.splitlines()
    assert loaded == "False False" and same_stderr == "True"
    for name in ("load_net", "AlexNet", "TrainedNet", "train_and_evaluate", "evaluate_nets", "export_saved_model"):
        assert name in names.split()
    # the names resolve (lazily)
    import alexnet_tf

    assert callable(alexnet_tf.load_net) and alexnet_tf.build_model.__module__ == "alexnet_tf.model"
    with pytest.raises(AttributeError):
        alexnet_tf.nothing_here  # noqa: B018


def test_alexnet_applications_style(trained_workdir):
    import numpy as np

    import alexnet_tf

    top = alexnet_tf.AlexNet(weights=trained_workdir)
    base = alexnet_tf.AlexNet(weights=trained_workdir, include_top=False)
    assert top.output.shape[-1] == 10 and base.output.shape[-1] == top.get_layer("fc7").units
    np.testing.assert_array_equal(base.get_layer("fc7").kernel.numpy(), top.get_layer("fc7").kernel.numpy())
    assert alexnet_tf.AlexNet().count_params() == 60_965_224  # untrained: the paper's net
