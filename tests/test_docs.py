"""The README's and docs/'s code blocks run as written (tests/docs_blocks.py reads them).

Each block is marked in the text: `<!-- test: ID -->` runs here in the slow tier, in a
fresh working directory holding what the text supposes (a trained run in runs/quickstart,
bvlc_alexnet.caffemodel, a folder of images), from RUNS[ID]; `<!-- test: skip REASON -->`
says why a block cannot run (ImageNet, a GPU, hours of training). The block's text is
run as it is, relative paths and all: only the sizes are made small, by a recipe of the
same name in the working directory (recipes/quickstart.py: the shipped one, a few steps)
or by the replacements listed with the block, each of which must still find its text;
scratch folders under /tmp and /data move into the test's own temporary folder, and a
server gets a free port. A digest (DIGESTS: the README's main tasks) runs nothing
itself: each of its commands must be a line of another block. The fast tier checks that
every block is marked and every marked block known, so a new block needs a test or a
reason."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable

import docs_blocks
import numpy as np
import pytest
from helpers import ROOT, free_ports, make_image_folder

# Blocks that .ci/run runs itself, in a fresh clone and a fresh venv (the test commands).
CI = {
    "two-commands": ".ci/run runs it in a fresh clone with a fresh venv",
    "slow-tier": ".ci/run runs it after the two commands, in the same venv",
}
# Blocks that gather commands written in full elsewhere: every command line of theirs is
# a line of another block (its trailing comment aside), whose own marker says how that
# one runs or why it cannot; so a digest runs nothing itself and cannot drift.
DIGESTS = {
    "tasks": "README.md's main tasks, one command each from docs/",
    "caffe-evaluate": "the caffe block runs this very command after its convert",
}

SMALL = {  # what "made small" means for a training run here
    "train.max_steps": 2,
    "train.batch_size": 8,
    "train.eval_batch_size": 8,
    "data.eval_examples": 16,
    "train.log_every": 1,
}
SMALL_RECIPES = {
    "quickstart": SMALL,
    "finetune": {**SMALL, "train.max_steps": 1, "compute.conv_form": "split", "compute.jit_compile": False},
}
PRELUDE = """\
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# wait_for PORT NAME: until the server on PORT answers that model NAME is available
wait_for() {
  python - "$@" <<'PY'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/v1/models/{sys.argv[2]}"
for _ in range(600):
    try:
        state = json.load(urllib.request.urlopen(url, timeout=5))["model_version_status"][0]["state"]
        if state == "AVAILABLE":
            print(f"{url}: {state}")
            break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"{url} did not answer")
PY
}
"""


@dataclasses.dataclass(frozen=True)
class Run:
    """How a block runs: `setup(world, cwd, tmp)` makes what the text supposes; `sizes`:
    (text, replacement) pairs, each of which must occur in the block ({tmp}: the test's
    scratch folder, {port}, {port2}: free ports); `check(cwd, output)` asserts on the
    outcome."""

    setup: Callable = lambda world, cwd, tmp: None
    sizes: tuple = ()
    check: Callable = lambda cwd, output: None
    env: tuple = ()  # (name, value) pairs the block runs with, as a user would set them


# ---------------------------------------------------------------- what the blocks suppose


def small_recipes(cwd):
    """recipes/NAME.py in `cwd`, as in a clone, each the shipped recipe made small."""
    os.makedirs(cwd / "recipes", exist_ok=True)
    for name, sets in SMALL_RECIPES.items():
        (cwd / "recipes" / f"{name}.py").write_text(
            textwrap.dedent(f'''\
                """The shipped {name} recipe made small for the tests of the README's blocks."""

                from alexnet_tf.config import load_recipe, override


                def get_config():
                    return override(load_recipe("{name}"), {sets!r})
                ''')
        )


@pytest.fixture(scope="module")
def world(trained_workdir, export_dir, caffemodel):
    """What the setups copy from: the session's tiny quickstart run (tests/conftest.py:
    three steps, the run the evaluate, export and serve tests use), its export, the
    caffemodel with its mean file."""
    return {"run": trained_workdir, "export": os.path.dirname(export_dir), "caffemodel": caffemodel}


def copy_run(world, cwd, name):
    shutil.copytree(world["run"], cwd / "runs" / name)


def copy_caffe(world, cwd):
    """bvlc_alexnet.caffemodel and imagenet_mean.binaryproto in the working directory."""
    shutil.copy(world["caffemodel"], cwd / "bvlc_alexnet.caffemodel")
    shutil.copy(os.path.join(os.path.dirname(world["caffemodel"]), "imagenet_mean.binaryproto"), cwd)


def imagenet_folder(root):
    """ROOT/train/<synset>/ for ILSVRC-2012's 1,000 synsets (two with images, the rest
    empty, as the README's one-liner makes them) and ROOT/val/<synset>/ with a few."""
    from alexnet_tf.caffe import imagenet_class_names

    synsets = imagenet_class_names()
    make_image_folder(root, classes=synsets[:2], train_per_class=3, val_per_class=2, size=(60, 80))
    for s in synsets[2:]:
        os.makedirs(root / "train" / s, exist_ok=True)


def fashion_mnist_files(folder):
    """The four gzip files of Debian's dataset-fashion-mnist, small: zeros but for the
    images `python -m benchmarks.jpegs --from fashion_mnist` takes (those clear of the bundled subset)."""
    import gzip

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for name, n, start in (("train", 38_000, 30_000), ("t10k", 7_000, 5_000)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[start : start + 200] = rng.integers(0, 256, (200, 28, 28))
        with gzip.open(folder / f"{name}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(folder / f"{name}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + rng.integers(0, 10, n).astype(np.uint8).tobytes())


# ---------------------------------------------------------------- the blocks


def setup_python_example(world, cwd, tmp):
    copy_run(world, cwd, "quickstart")


def check_python_example(cwd, output):
    assert "ten crops: top-1 error" in output and "cosine: the nearest training image" in output


def setup_caffe(world, cwd, tmp):
    copy_caffe(world, cwd)
    imagenet_folder(tmp / "data" / "imagenet")


def check_caffe(cwd, output):
    for path in ("runs/bvlc_alexnet/config.json", "exports/bvlc_alexnet/1/saved_model.pb"):
        assert (cwd / path).is_file(), path
    assert (cwd / "figures" / "bvlc_alexnet" / "fig4_neighbours.png").is_file()
    assert "/v1/models/bvlc_alexnet: AVAILABLE" in output


def setup_finetune(world, cwd, tmp):
    copy_caffe(world, cwd)
    small_recipes(cwd)
    make_image_folder(cwd / "DIR", classes=("a", "b"), train_per_class=8, val_per_class=4)
    copy_run(world, cwd, "quickstart")


def check_finetune(cwd, output):
    for run in ("mine", "mine2"):
        with open(cwd / "runs" / run / "config.json") as f:
            assert json.load(f)["model"]["num_classes"] == 2
    assert "fine-tuning from" in output


def setup_folders(world, cwd, tmp):
    small_recipes(cwd)
    # benchmarks/ as a clone has it: the block runs `python -m benchmarks.jpegs` from the clone's root
    shutil.copytree(os.path.join(ROOT, "benchmarks"), cwd / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    make_image_folder(cwd / "DIR", classes=("a", "b"), train_per_class=8, val_per_class=4)
    fashion_mnist_files(tmp / "fashion-mnist")


def setup_run_paper(world, cwd, tmp):
    copy_run(world, cwd, "paper")


def check_run_paper(cwd, output):
    assert output.count("resumed from") == 2 and (cwd / "exports" / "paper" / "1" / "saved_model.pb").is_file()


def setup_runs(world, cwd, tmp):
    """runs/paper and runs/a..e (five nets to average)."""
    for name in ("paper", "a", "b", "c", "d", "e"):
        copy_run(world, cwd, name)


def setup_serving(world, cwd, tmp):
    """setup_runs, and exports/alexnet and exports/quickstart (version 1 of runs/paper) and
    a cat.jpg."""
    from PIL import Image

    setup_runs(world, cwd, tmp)
    for name in ("alexnet", "quickstart"):
        shutil.copytree(world["export"], cwd / "exports" / name)
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(cwd / "cat.jpg")


def check_export(cwd, output):
    """`saved_model_cli show` lists both signatures, JPEG/PNG bytes and uint8 pixels."""
    assert "signature_def['serving_default']" in output and "signature_def['serve_uint8']" in output
    assert "DT_STRING" in output and "DT_UINT8" in output


def check_session(output):
    """Five class names (bytes, as TensorFlow gives strings) and their five probabilities, best first."""
    names, probabilities = output.strip().splitlines()[-1].split("] [")
    assert names.count("b'") == 5
    values = [float(v) for v in probabilities.strip("[]").split()]
    assert len(values) == 5 and values == sorted(values, reverse=True) and 0 < sum(values) <= 1.0001


def check_figures(cwd, output):
    assert sorted(os.listdir(cwd / "runs" / "paper" / "figures")) == ["fig3_conv1_kernels.png", "fig4_neighbours.png"]


def check_rest(cwd, output):
    assert "/v1/models/alexnet: AVAILABLE" in output and '"predictions"' in output and '"signature_def"' in output


def setup_predict(world, cwd, tmp):
    """bvlc_alexnet.caffemodel, cat.jpg and photos/ with two PNGs (dog.png) and a file that is no image."""
    from PIL import Image

    copy_caffe(world, cwd)
    rng = np.random.default_rng(0)
    (cwd / "photos").mkdir()
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(cwd / "cat.jpg")
    for name in ("dog.png", "bird.png"):
        Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(cwd / "photos" / name)
    (cwd / "photos" / "notes.jpg").write_text("not an image")


def check_predict(cwd, output):
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [line["image"] for line in lines] == ["photos/bird.png", "photos/dog.png"]
    assert all(len(line["top"]) == 3 and line["top"][0]["class_name"].startswith("n") for line in lines)
    assert "cat.jpg\n" in output and "skipped photos/notes.jpg: not a JPEG, PNG, GIF or BMP image" in output


def check_predict_python(cwd, output):
    assert output.count("[('n") == 2


FOLDERS = (
    ("/tmp/", "{tmp}/"),
    ("--from fashion_mnist ", "--from fashion_mnist:{tmp}/fashion-mnist "),  # Debian's files, small
    ("--images 8000", "--images 64"),
)
RUNS = {
    "folders": Run(setup_folders, FOLDERS),
    "run-folder": Run(setup_run_paper, check=check_run_paper),
    "python-example": Run(
        setup_python_example,
        (  # 200 test and 400 training images of the 2,000 and 8,000: ten crops and fc7 on all take minutes
            ('= source.arrays["test"]', '= (a[:200] for a in source.arrays["test"])'),
            ('= source.arrays["train"]', '= (a[:400] for a in source.arrays["train"])'),
        ),
        check_python_example,
    ),
    # weights="imagenet" read from the file a user names, not fetched
    "predict": Run(setup_predict, check=check_predict, env=(("ALEXNET_TF_WEIGHTS", "bvlc_alexnet.caffemodel"),)),
    "predict-python": Run(
        setup_predict, check=check_predict_python, env=(("ALEXNET_TF_WEIGHTS", "bvlc_alexnet.caffemodel"),)
    ),
    "caffe": Run(
        setup_caffe,
        (
            ("/data/", "{tmp}/data/"),
            ("--model-name bvlc_alexnet\n", "--model-name bvlc_alexnet --port {port} & wait_for {port} bvlc_alexnet\n"),
        ),
        check_caffe,
    ),
    "finetune": Run(setup_finetune, check=check_finetune),
    "serving-evaluate": Run(setup_runs),
    "serving-export": Run(setup_runs, check=check_export),
    "serving-python": Run(setup_serving),
    "serving-session": Run(setup_serving, check=lambda cwd, output: check_session(output)),
    "serving-rest": Run(
        setup_serving,
        (
            ("--port 8501 --model-name alexnet\n", "--port {port} --model-name alexnet & wait_for {port} alexnet\n"),
            ("serve runs/paper ", "serve runs/paper --port {port2} & wait_for {port2} alexnet; : "),
            ("localhost:8501", "localhost:{port}"),
        ),
        check_rest,
    ),
    "serving-bench": Run(
        setup_serving, (("--clients 1 8 32 128 --seconds 10 --rounds 2", "--clients 1 2 --seconds 1 --rounds 1"),)
    ),
    "serving-bench-largest": Run(setup_serving, (("--clients 32 --seconds 30", "--clients 2 --seconds 1"),)),
    "serving-figures": Run(setup_serving, check=check_figures),
}


def marked():
    """The runnable blocks, each text once (a block written in two places runs once)."""
    seen, out = set(), []
    for block in docs_blocks.blocks():
        if block.id in RUNS and (block.id, block.source) not in seen:
            seen.add((block.id, block.source))
            out.append(block)
    return out


def test_every_block_is_marked_and_every_mark_is_known():
    """A block with no marker, a marker that names no test, a replacement that no longer
    finds its text: each would let a block break unseen."""
    problems = []
    for block in docs_blocks.blocks():
        if not block.id and not block.skip:
            problems.append(f"{block.where}: no <!-- test: ID --> or <!-- test: skip REASON --> above it")
        elif block.id and block.id not in RUNS and block.id not in CI and block.id not in DIGESTS:
            problems.append(
                f"{block.where}: <!-- test: {block.id} --> is in none of RUNS, CI, DIGESTS of tests/test_docs.py"
            )
        for old, _ in RUNS.get(block.id, Run()).sizes:
            if old not in block.source:
                problems.append(f"{block.where} ({block.id}): its text no longer holds {old!r}")
    for block_id in [*RUNS, *CI, *DIGESTS]:
        if not any(b.id == block_id for b in docs_blocks.blocks()):
            problems.append(f"no block is marked <!-- test: {block_id} -->")
    assert not problems, "\n".join(problems)


def command_lines(source):
    """A block's command lines, each without its trailing comment."""
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in source.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_digests_hold_only_commands_of_other_blocks():
    """README.md's main tasks are the commands of docs/'s blocks, word for word: a
    command changed in one place and not the other fails here."""
    problems = []
    for block in docs_blocks.blocks():
        if block.id not in DIGESTS:
            continue
        elsewhere = {line for b in docs_blocks.blocks() if b.id not in DIGESTS for line in command_lines(b.source)}
        problems += [
            f"{block.where} ({block.id}): {line!r} is in no other block"
            for line in command_lines(block.source)
            if line not in elsewhere
        ]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("block", marked(), ids=lambda b: b.id)
def test_block_runs_as_written(block, world, tmp_path):
    """The block in a fresh working directory set up as the text supposes: `bash -e` for
    shell blocks (every command must succeed), a new Python process for Python ones."""
    run = RUNS[block.id]
    cwd, tmp = tmp_path / "clone", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    run.setup(world, cwd, tmp)
    port, port2 = free_ports(2)
    text = block.source
    for old, new in run.sizes:
        text = text.replace(old, new.format(tmp=tmp, port=port, port2=port2))
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],  # `python` is this one
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        **dict(run.env),
    }
    if block.language == "python":
        args = [sys.executable, "-c", text]
    else:
        args = ["bash", "-c", PRELUDE + text]
    done = subprocess.run(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900
    )
    assert done.returncode == 0, f"{block.where} ({block.id}) exited with {done.returncode}:\n{done.stdout[-4000:]}"
    run.check(cwd, done.stdout)
