"""The ablation command: a tiny grid end to end, resuming, and the paired summary."""

import json
import math

import pytest

from alexnet_tf import ablate


@pytest.mark.slow
def test_tiny_grid_writes_table_figure_and_resumes(tmp_path, capsys):
    out = tmp_path / "ablate"
    kwargs = dict(
        dataset="builtin:fashion_mnist",
        seeds=1,
        budget_epochs=1,
        out=str(out),
        settings=["no_lrn", "tanh", "no_pca", "ten_crop"],
        overrides=[
            "train.max_steps=3",
            "train.batch_size=16",
            "train.log_every=1",
            "data.eval_examples=20",
            "data.shuffle_buffer=100",
        ],
    )
    report = ablate.ablate(**kwargs)
    printed = capsys.readouterr().out
    assert "[1/3] baseline seed 0" in printed and "[3/3] tanh seed 0" in printed
    assert "skipping no_pca" in printed  # Fashion-MNIST is grey

    runs = {(r["setting"], r["seed"]): r for r in report["runs"]}
    assert set(runs) == {("baseline", 0), ("no_lrn", 0), ("tanh", 0)}
    config = json.loads((out / "runs" / "no_lrn-seed0" / "config.json").read_text())
    assert config["model"]["lrn"] is False and config["train"]["seed"] == 0
    assert json.loads((out / "runs" / "tanh-seed0" / "config.json").read_text())["model"]["activation"] == "tanh"
    assert [p["step"] for p in runs[("tanh", 0)]["curve"]] == [1, 2, 3]
    assert 0 <= runs[("baseline", 0)]["ten_crop_top1_error"] <= 1

    rows = {r["setting"]: r for r in report["summary"]["rows"]}
    assert "skipped" in rows["no_pca"]
    diff = 100 * (runs[("no_lrn", 0)]["top1_error"] - runs[("baseline", 0)]["top1_error"])
    assert math.isclose(rows["no_lrn"]["diff_mean"], diff)
    assert math.isclose(rows["ten_crop"]["top1_error_mean"], 100 * runs[("baseline", 0)]["ten_crop_top1_error"])
    md = (out / "ablations.md").read_text()
    for name in ("baseline", "no_lrn", "tanh", "no_pca", "ten_crop"):
        assert f"| {name}" in md
    assert json.loads((out / "ablations.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    assert (out / "fig1_relu_tanh.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Finished runs are not redone: the second call trains nothing and reports the same.
    again = ablate.ablate(**kwargs)
    assert "] baseline seed" not in capsys.readouterr().out
    assert again["summary"] == report["summary"]

    # A larger budget continues the finished runs from their checkpoints.
    kwargs["overrides"] = [o.replace("train.max_steps=3", "train.max_steps=4") for o in kwargs["overrides"]]
    ablate.ablate(**kwargs)
    assert "resumed from" in capsys.readouterr().out
    for name in ("baseline", "no_lrn", "tanh"):
        assert json.loads((out / "runs" / f"{name}-seed0" / "results.json").read_text())["step"] == 4
    ten = json.loads((out / "runs" / "baseline-seed0" / "ten_crop.json").read_text())
    assert ten["models"][0].endswith("ckpt-4")  # re-measured on the newer checkpoint


def _run(name, seed, top1, train=None, ten=None):
    r = {"top1_error": top1, "final_train_top1_error": train, "epochs_to_target": None}
    if ten is not None:
        r["ten_crop_top1_error"] = ten
    return (name, seed), r


def test_summary_pairs_each_seed_with_its_baseline():
    runs = dict(
        [
            _run("baseline", 0, 0.30, 0.25, ten=0.29),
            _run("baseline", 1, 0.20, 0.15, ten=0.18),
            _run("no_lrn", 0, 0.32, 0.26),
            _run("no_lrn", 1, 0.23, 0.17),
            _run("no_overlap", 0, 0.29, 0.2),
            _run("no_overlap", 1, 0.19, 0.1),
        ]
    )
    summary = ablate.summarize(runs, ["baseline", "no_lrn", "no_overlap", "ten_crop"], [], 0.25)
    rows = {r["setting"]: r for r in summary["rows"]}
    # Paired differences 2 and 3 points: mean 2.5, std 0.707; unpaired spread would be ~6.
    assert math.isclose(rows["no_lrn"]["diff_mean"], 2.5)
    assert math.isclose(rows["no_lrn"]["diff_std"], math.sqrt(0.5))
    assert rows["no_lrn"]["direction_matches"] and rows["no_lrn"]["significant"]
    assert math.isclose(rows["no_overlap"]["diff_mean"], -1.0)
    assert not rows["no_overlap"]["direction_matches"]
    assert math.isclose(rows["baseline"]["top1_error_mean"], 25.0)
    assert math.isclose(rows["baseline"]["test_minus_train_mean"], 5.0)
    assert math.isclose(rows["ten_crop"]["diff_mean"], -1.5) and rows["ten_crop"]["direction_matches"]


def test_the_baseline_is_named_by_what_ran():
    """The table's baseline is the recipe's net, named so, with every setting in which it
    is not the paper's net (recipes/paper.py): for the quickstart a quarter of the width,
    67 px, fan-in init, biases 0, inputs x1/64, and the schedule the command set."""
    from alexnet_tf.config import load_recipe, override

    quick = override(load_recipe("quickstart"), ["optim.schedule=step", "optim.step_epochs=(5, 7)"])
    changes = ablate.differences_from_paper(quick)
    for expected in (
        "model.width=0.25",
        "model.input_size=67",
        "model.init='fan_in'",
        "model.bias_one=False",
        "data.crop_size=67",
        "data.input_scale=0.015625",
        "optim.schedule='step'",
        "optim.step_epochs=(5, 7)",
    ):
        assert expected in changes
    assert not any(c.startswith(("model.num_classes", "compute.conv_form", "data.source")) for c in changes)
    assert ablate.differences_from_paper(load_recipe("paper")) == []
    assert "optim.step_epochs" not in " ".join(ablate.differences_from_paper(load_recipe("quickstart")))

    summary = ablate.summarize(
        dict([_run("baseline", 0, 0.3, 0.25), _run("no_lrn", 0, 0.32, 0.26)]), ["baseline", "no_lrn"], [], 0.25
    )
    meta = {"dataset": "d", "seeds": 1, "budget_epochs": 8, "recipe": "recipes/quickstart.py"}
    md = ablate.markdown(summary, {**meta, "baseline_differs_from_paper": changes})
    assert "paper's net)" not in md and "| baseline (quickstart.py) |" in md
    assert "Baseline: the net of quickstart.py, not the paper's net: it differs from recipes/paper.py in" in md
    assert "model.width=0.25" in md and "optim.schedule='step'" in md
    paper_md = ablate.markdown(summary, {**meta, "recipe": "paper.py", "baseline_differs_from_paper": []})
    assert "| baseline (paper.py) |" in paper_md and "the net of paper.py, the paper's" in paper_md
