"""The registry of data sources: every kind is one function and one registration, the
`--data` help and docs/input.md's table follow it, and a kind registered outside the
package trains like a shipped one."""

import json
import os
import re

import numpy as np
from helpers import ROOT, sets, tiny_sets

from alexnet_tf import cli, paths
from alexnet_tf import data as data_lib
from alexnet_tf.config import DataConfig
from alexnet_tf.data import specs
from alexnet_tf.data.sources import ArraySource
from alexnet_tf.train import main as train_main


def documented_forms() -> list[str]:
    """The specs in the first column of docs/input.md's table under "### Sources"."""
    with open(os.path.join(ROOT, "docs", "input.md")) as f:
        text = f.read()
    section = text.split("### Sources", 1)[1].split("\n###", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [form for row in rows for form in re.findall(r"`([^`]+)`", row.split("|")[1])]


def test_docs_list_every_registered_source_and_no_other():
    documented = documented_forms()
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(specs.forms()), (
        "docs/input.md's table of sources and alexnet_tf/data/specs.py's registrations differ"
    )
    # a table of the common flags that lists the kinds (the README's, where it has one) lists them all
    with open(os.path.join(ROOT, "README.md")) as f:
        rows = [line for line in f if line.startswith("| `--data SPEC` |")]
    for row in rows:
        assert sorted(re.findall(r"`([^`]+)`", row.split("|", 2)[2])) == sorted(specs.forms()), row
    # the kinds the README's quickstart and the recipes use are among them
    assert {"folder:PATH", "tfds:NAME[:SPLIT]", "tfrecord:GLOB", "builtin:fashion_mnist"} <= set(specs.forms())


def help_of_data() -> str:
    p = cli.parser("train", "")
    cli.add_data(p)
    return " ".join(next(a.help for a in p._actions if a.dest == "data").split())


def test_a_source_registered_in_one_place_is_known_to_the_help_the_paths_and_training(user_cwd, monkeypatch, capsys):
    """One function and one registration, outside the package: `--data toy:DIR` then
    resolves DIR against the working directory, is listed by --data's help, opens, and
    trains and evaluates a net as `train` runs it."""
    monkeypatch.setattr(specs, "SOURCES", dict(specs.SOURCES))  # the registration ends with the test
    assert "toy:DIR" not in help_of_data()

    @data_lib.data_source("toy:DIR", path=True)
    def toy(folder: str, config: DataConfig) -> ArraySource:
        with np.load(os.path.join(folder, "toy.npz")) as f:
            return ArraySource("toy", ["dark", "light"], {s: (f[f"{s}_x"], f[f"{s}_y"]) for s in ("train", "val")})

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 32), ("val", 16)):
        y = np.arange(n, dtype=np.int32) % 2
        arrays[f"{split}_x"] = (rng.integers(0, 100, (n, 40, 40, 3)) + 150 * y[:, None, None, None]).astype(np.uint8)
        arrays[f"{split}_y"] = y
    os.makedirs("toy_data")
    np.savez("toy_data/toy.npz", **arrays)

    assert "toy:DIR" in help_of_data()
    assert paths.resolve_spec("toy:toy_data") == f"toy:{user_cwd / 'toy_data'}"
    source = data_lib.open_source("toy:toy_data")
    assert source.class_names == ["dark", "light"] and source.sizes == {"train": 32, "val": 16}
    _, pixels, label, name = next(iter(source.examples("val")))
    np.testing.assert_array_equal(pixels.numpy(), arrays["val_x"][0])
    assert int(label) == 0 and name.numpy() == b"toy:val#0"

    overrides = tiny_sets(**{"train.max_steps": 2, "train.batch_size": 8, "data.eval_examples": 16})
    assert train_main(["quickstart", "--data", "toy:toy_data", "--workdir", "runs/toy", *sets(overrides)]) == 0
    run = user_cwd / "runs" / "toy"
    with open(run / "config.json") as f:
        config = json.load(f)
    assert config["data"]["source"] == f"toy:{user_cwd / 'toy_data'}" and config["data"]["eval_split"] == "val"
    with open(run / "results.json") as f:
        assert 0.0 <= json.load(f)["top1_error"] <= 1.0
    assert "step 2/2" in capsys.readouterr().out
