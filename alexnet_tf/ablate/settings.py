"""The ablations: which switch each flips, the section it comes from and what the paper
claims for it."""

from __future__ import annotations

import dataclasses
import os

from alexnet_tf.config import recipe_folder

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
