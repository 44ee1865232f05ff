"""The ablations: which switch each flips, the section it comes from and what the paper
claims for it."""

from __future__ import annotations

import dataclasses
import os

from alexnet_tf.config import Config, load_recipe, recipe_folder

DEFAULT_DATASET = "fashion_mnist:/usr/share/datasets/fashion-mnist"
DEFAULT_RECIPE = os.path.join(recipe_folder(), "quickstart.py")  # the shipped one, installed or in a checkout
BASELINE = "baseline"


@dataclasses.dataclass(frozen=True)
class Ablation:
    name: str
    overrides: dict
    section: str
    claim: str
    # The paper's change of top-1 error (points) from the baseline to this setting, where
    # it gives one; `sign` is the direction it reports (+1: the setting is worse).
    paper_diff: float | None
    sign: int
    colour_only: bool = False
    eval_only: bool = False


ABLATIONS = (
    Ablation("no_lrn", {"model.lrn": False}, "3.3", "LRN lowers top-1 error by 1.4 points", 1.4, +1),
    Ablation("no_overlap", {"model.overlap_pooling": False}, "3.4", "overlapping pooling lowers top-1 by 0.4", 0.4, +1),
    Ablation(
        "one_column",
        {"model.two_columns": False},
        "3.2",
        "two columns beat one with half the kernels by 1.7",
        1.7,
        +1,
    ),
    Ablation("tanh", {"model.activation": "tanh"}, "3.1, Fig. 1", "ReLU trains six times faster than tanh", None, +1),
    Ablation(
        "no_dropout",
        {"model.dropout": 0.0},
        "4.2",
        "without dropout: fewer iterations, much more overfitting",
        None,
        +1,
    ),
    Ablation(
        "no_pca",
        {"data.pca_noise_std": 0.0},
        "4.1",
        "colour noise lowers top-1 by over 1 point",
        1.0,
        +1,
        colour_only=True,
    ),
    Ablation("ten_crop", {}, "4.1", "averaging ten crops beats the centre crop", None, -1, eval_only=True),
)
NAMES = (BASELINE,) + tuple(a.name for a in ABLATIONS)

# What makes the net that is ablated, and how it trains: the settings in which the
# baseline may differ from the paper's net (recipes/paper.py). Left out: the data's
# source and classes, and the forms, which compute the same function at another speed.
NET_SETTINGS = (
    "model",
    "optim",
    "data.resize_size",
    "data.crop_size",
    "data.pad_crop",
    "data.resize",
    "data.random_flip",
    "data.pca_noise_std",
    "data.subtract_mean",
    "data.input_scale",
    "data.channel_order",
    "train.batch_size",
)
SAME_FUNCTION = ("model.num_classes",)


def differences_from_paper(config: Config) -> list[str]:
    """`key=value` for each NET_SETTINGS leaf of `config` that is not recipes/paper.py's:
    what the baseline of an ablation is, said where its table is (for the quickstart: a
    quarter of the width, 67 px, fan-in init, biases 0, inputs x1/64, and its schedule)."""

    def leaves(tree, prefix=""):
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    paper = dict(leaves(dataclasses.asdict(load_recipe(os.path.join(recipe_folder(), "paper.py")))))
    ours = dict(leaves(dataclasses.asdict(config)))
    wanted = [k for k in ours if any(k == s or k.startswith(s + ".") for s in NET_SETTINGS)]
    if ours.get("optim.schedule") != "step":
        wanted = [k for k in wanted if k != "optim.step_epochs"]
    return [f"{k}={ours[k]!r}" for k in wanted if k not in SAME_FUNCTION and ours[k] != paper.get(k)]
