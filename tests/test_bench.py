"""`python -m alexnet_tf.bench`: each benchmark runs end to end and prints its JSON lines."""

import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, benchmark

from alexnet_tf import bench
from alexnet_tf.bench import common
from alexnet_tf.bench import export as export_bench
from alexnet_tf.bench import input as input_bench
from alexnet_tf.bench import serve as serve_bench
from alexnet_tf.bench import train as train_bench


@pytest.mark.slow
def test_bench_input_prints_json_lines(tmp_path, capsys):
    out = tmp_path / "input.jsonl"
    results = input_bench.bench_input(out=str(tmp_path), seconds=0.3, rounds=3, cores=1, images=16)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["pipeline"] for r in lines] == ["alexnet_tf", "alexnet_tf_host_float", "pil_baseline"]
    for r in lines:
        assert r["images_per_sec_per_core"] > 0 and r["cores"] == 1
        assert abs(r["images_per_sec"] - r["images_per_sec_per_core"]) < 0.2
        # The reported rate is the median of the three turns the pipeline took.
        assert len(r["rounds"]) == 3 and sorted(r["rounds"])[1] == r["images_per_sec_per_core"]
    base = lines[2]["rounds"]
    for r in lines[:2]:
        ratios = sorted(a / b for a, b in zip(r["rounds"], base))
        assert abs(r["speedup_vs_pil_baseline"] - ratios[1]) < 0.006
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines == results


QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "quickstart.py")


def _train_lines(capsys, argv, log=None):
    """The JSON lines of `bench train` on the quickstart recipe; its stderr appended to `log`."""
    assert bench.main(["train", QUICKSTART, "--batch", "8", "--no-jit", *argv]) == 0
    captured = capsys.readouterr()
    if log is not None:
        log.append(captured.err)
    return [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_bench_train_synthetic(tmp_path, capsys):
    out = tmp_path / "train.jsonl"  # in --out DIR
    argv = "--synthetic --steps 3 --warmup 2 --steps-per-loop 1 2 --peak-tflops 0.001 --out".split()
    log = []
    lines = _train_lines(capsys, [*argv, str(tmp_path)], log)
    assert [r["bench"] for r in lines] == ["train", "train", "train_host_overhead"]
    assert "forms on cpu, float32: conv_form=split (auto), lrn_impl=matmul (auto), update_op=fused (auto)" in log[0]
    assert [r["steps_per_loop"] for r in lines[:2]] == [1, 2]
    macs = train_bench.forward_macs(_quickstart_model())
    for r in lines[:2]:
        assert (r["input"], r["feed"], r["batch"], r["dtype"], r["precision"]) == (
            "synthetic",
            "device",
            8,
            "fp32",
            "float32",
        )
        assert r["jit"] is False and r["replicas"] == 1 and r["device"].startswith("CPU")
        # the forms that ran: the recipe's split convolutions, the CPU's choices for the rest
        assert r["forms"] == {
            **{"device_kind": "cpu", "precision": "float32", "conv_form": "split", "lrn_impl": "matmul"},
            **{
                "update_op": "fused",
                "jit_compile": False,
                "fused_update": False,
                "auto": ["conv_form", "lrn_impl", "update_op"],
            },
        }
        assert r["steps"] == 3 and r["steps_run"] == 2 + 3 + 3  # warm-up, then 3 steps per setting
        assert r["img_per_s"] > 0 and r["step_ms"] > 0
        assert abs(r["img_per_s"] * r["step_ms"] / 1000 - 8) < 0.01  # batch / step time
        assert r["loss"] > 0 and r["compile_seconds"] > 0
        assert r["train_flops_per_image"] == 6 * macs
        assert abs(r["achieved_tflops"] - r["img_per_s"] * r["train_flops_per_image"] / 1e12) <= 1e-4
        assert r["peak_tflops"] == 0.001 and abs(r["mfu"] - r["achieved_tflops"] / 0.001) < 0.1
        assert r["peak_memory_bytes"] is None and r["process_max_rss_bytes"] > 100e6
    overhead = lines[2]
    assert overhead["step_ms"] == [lines[0]["step_ms"], lines[1]["step_ms"]]
    # t(1) = c + o and t(2) = c + o / 2, so o = 2 * (t(1) - t(2))
    assert abs(overhead["host_ms_per_call"] - 2 * (lines[0]["step_ms"] - lines[1]["step_ms"])) < 0.01
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines


@pytest.mark.slow
def test_bench_train_on_the_input_pipeline(capsys):
    argv = "--data builtin:fashion_mnist --steps 3 --warmup 1 --steps-per-loop 2 --precision fp32".split()
    lines = _train_lines(capsys, argv)
    [r] = lines
    assert (r["input"], r["feed"], r["steps_per_loop"], r["steps_run"]) == ("builtin:fashion_mnist", "pipeline", 2, 4)
    assert r["img_per_s"] > 0 and r["mfu"] is None and r["peak_tflops"] is None


@pytest.mark.slow
def test_bench_train_feeds_the_synthetic_batch_from_the_host_on_request(capsys):
    [r] = _train_lines(capsys, "--feed dataset --steps 2 --warmup 1".split())
    assert (r["input"], r["feed"], r["steps_run"]) == ("synthetic", "dataset", 3)
    assert bench.main(["train", QUICKSTART, "--data", "builtin:fashion_mnist", "--feed", "dataset"]) == 2
    assert "--feed is for synthetic batches" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_train_on_two_replicas(capsys):
    # conftest splits the CPU into two logical devices: MirroredStrategy, a batch on each
    [r] = _train_lines(capsys, "--set distribute.devices=cpu:2 --steps 2 --warmup 1".split())
    assert (r["replicas"], r["feed"], r["steps_run"]) == (2, "device", 3)
    assert r["img_per_s"] > 0


def test_forward_macs_match_the_paper():
    from alexnet_tf.config import load_recipe
    from alexnet_tf.model import build_model

    paper = load_recipe(os.path.join(os.path.dirname(QUICKSTART), "paper.py"))
    macs = train_bench.forward_macs(build_model(paper.model))
    assert abs(macs - 724e6) / 724e6 < 1e-3  # the commonly quoted 724 M multiply-adds of the two-column net
    assert macs == benchmark("compare").PAPER_FORWARD_MACS  # what `compare` recognises as the peer's net


def test_synthetic_batch_is_shaped_like_training_batches():
    from alexnet_tf import data as data_lib
    from alexnet_tf.config import load_recipe

    config = load_recipe(QUICKSTART)
    source = data_lib.open_source(config.data.source, config.data)
    spec = data_lib.train_dataset(source, config.data, "train", 8).element_spec
    batch = data_lib.synthetic_batch(config, 8)
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == {
        k: (s.dtype, tuple(s.shape)) for k, s in spec.items()
    }
    offset = batch["offset"].numpy()
    assert offset.min() >= 0 and offset.max() <= config.data.resize_size - config.data.crop_size
    assert batch["label"].numpy().max() < config.model.num_classes


def test_feed_stops_host_calls_at_epoch_ends():
    feed = train_bench.Feed(make_iterator=lambda epoch: [f"epoch{epoch}"], steps_per_epoch=3)
    takes = [feed.take(2) for _ in range(4)]
    assert [n for _, n in takes] == [2, 1, 2, 1]
    iterators = [it for it, _ in takes]
    assert iterators[0] is iterators[1] and iterators[2] is iterators[3] and iterators[1] is not iterators[2]
    assert [next(iterators[0]), next(iterators[2])] == ["epoch0", "epoch1"]


def _quickstart_model():
    from alexnet_tf.config import load_recipe
    from alexnet_tf.model import build_model

    return build_model(load_recipe(QUICKSTART).model)


@pytest.mark.slow
def test_generated_jpegs_prepared_feed_the_train_bench(tmp_path, capsys):
    """The GPU host's end-to-end measurement at small scale: generate 256 px JPEGs,
    `prepare` them into TFRecords, time training on them with --repeat."""
    import glob

    import tensorflow as tf

    from alexnet_tf import data as data_lib
    from alexnet_tf import prepare

    gen, rec = str(tmp_path / "gen"), str(tmp_path / "rec")
    common.make_jpegs(gen, count=40, classes=4)
    files = sorted(glob.glob(os.path.join(gen, "train", "*", "*.JPEG")))
    assert len(files) == 40 and len({os.path.dirname(f) for f in files}) == 4
    assert tf.image.extract_jpeg_shape(tf.io.read_file(files[0])).numpy().tolist() == [256, 256, 3]
    assert prepare.main(["--data", gen, "--out", rec, "--size", "76", "--shard-size", "16"]) == 0
    capsys.readouterr()
    # --repeat plays the split several times in one epoch, the same files each time.
    source = data_lib.open_source("tfrecord:" + rec)
    three = common.repeated(source, "train", 3)
    assert three.sizes["train"] == 120
    names = [n for _, _, _, n in three.examples("train").as_numpy_iterator()]
    assert len(names) == 120 and names[:40] == names[40:80] == names[80:]
    argv = [
        "--data",
        "tfrecord:" + rec,
        "--set",
        "model.num_classes=4",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--repeat",
        "2",
    ]
    [r] = _train_lines(capsys, argv)
    assert (r["input"], r["feed"], r["steps_run"]) == ("tfrecord:" + rec, "pipeline", 5)
    assert r["img_per_s"] > 0
    assert bench.main(["train", QUICKSTART, "--repeat", "2"]) == 2
    assert "--repeat N (N >= 1) goes with --data" in capsys.readouterr().err


PEER = 'the PyTorch peer is not installed: pip install -e ".[peer]"'


def _torch_net():
    """benchmarks/torch_net.py, imported from the checkout (PyTorch is not a dependency)."""
    import importlib.util

    pytest.importorskip("torch", reason=PEER)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "torch_net.py")
    spec = importlib.util.spec_from_file_location("torch_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.peer
@pytest.mark.parametrize("convention", ["paper", "cuda-convnet", "caffe"])
def test_the_peers_lrn_is_ours(convention):
    """torch.nn.LocalResponseNorm divides alpha by n: the peer passes 5 x 1e-4 for the paper's
    convention, and its numbers equal our layer's."""
    torch = pytest.importorskip("torch", reason=PEER)

    from alexnet_tf.model import LocalResponseNormalization

    torch_net = _torch_net()
    a = np.random.default_rng(7).normal(scale=40.0, size=(2, 5, 5, 12)).astype("float32")
    ours = LocalResponseNormalization(convention=convention)(a).numpy()
    theirs = torch_net.lrn(convention)(torch.from_numpy(a).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert torch_net.lrn("paper").alpha == pytest.approx(5e-4) and torch_net.lrn("paper").k == 2.0


@pytest.mark.peer
def test_the_peer_is_the_same_net():
    """The quickstart net with our weights gives our logits in PyTorch (two columns,
    LRN, pooling, fc layers; dropout off); the paper's net has Sec. 3.5's parameters and
    multiply-adds; Sec. 4.2's dropout form scales by 1 - p at test and not in training."""
    torch = pytest.importorskip("torch", reason=PEER)

    from alexnet_tf.config import load_recipe
    from alexnet_tf.model import build_model

    torch_net = _torch_net()
    config = load_recipe(QUICKSTART)
    model = build_model(config.model, seed=1)
    net = torch_net.load_keras_weights(torch_net.build("quickstart"), model).eval()
    x = np.random.default_rng(8).normal(size=(3, 67, 67, 3)).astype("float32")
    with torch.no_grad():
        theirs = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(theirs, model(x).numpy(), rtol=1e-4, atol=1e-4)
    paper = torch_net.build("paper")
    assert sum(p.numel() for p in paper.parameters()) == 60_965_224
    assert torch_net.forward_macs(paper, 227) == benchmark("compare").PAPER_FORWARD_MACS
    drop = torch_net.PaperDropout(0.5)
    ones = torch.ones(1000)
    assert set(drop.train()(ones).unique().tolist()) == {0.0, 1.0}
    assert torch.equal(drop.eval()(ones), torch.full((1000,), 0.5))


@pytest.mark.slow
def test_bench_export_times_the_savedmodel(export_dir, tmp_path, capsys):
    out = tmp_path / "export.jsonl"  # in --out DIR
    argv = ["export", export_dir, "--image-size", "76", "--net", "quickstart", "--batch", "4", "1"]
    assert bench.main([*argv, "--calls", "5", "--warmup", "1", "--out", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["bench"], r["net"], r["batch"], r["calls"], r["image_size"]) for r in lines] == [
        ("export", "quickstart", 4, 5, 76),
        ("export", "quickstart", 1, 5, 76),
    ]
    for r in lines:
        assert abs(r["img_per_s"] * r["step_ms"] / 1000 - r["batch"]) < 0.01  # batch / mean call time
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    assert bench.main(["export"]) == 2
    assert "give an EXPORT_DIR or --recipe RECIPE" in capsys.readouterr().err


# The least each subcommand needs on its command line, and the function its flags go to.
MINIMAL = {"input": [], "train": [], "serve": ["x"], "export": []}
FUNCTIONS = {
    "input": input_bench.bench_input,
    "train": train_bench.TrainBench,
    "serve": serve_bench.bench_serve,
    "export": export_bench.bench_export,
}


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_each_subcommands_flags_are_its_functions_arguments_with_the_same_defaults(name, capsys):
    """`bench NAME` without flags does what the function does called from Python without
    them; its help shows those defaults and its part of the docstring."""
    assert set(MINIMAL) == set(bench.SUBCOMMANDS)
    flags = vars(bench.parser().parse_args([name, *MINIMAL[name]]))
    del flags["fn"], flags["command"]
    params = inspect.signature(FUNCTIONS[name]).parameters
    assert set(flags) == set(params)
    for key, param in params.items():
        if param.default is not param.empty:
            default = list(param.default) if isinstance(param.default, tuple) else param.default
            assert flags[key] == default, (name, key)
    with pytest.raises(SystemExit):
        bench.main([name, "-h"])
    about, options = capsys.readouterr().out.split("options:")
    assert f"`{name}`:" in about and "(default:" in options
    assert options.count("default") == options.count("(default:"), options  # no default said twice


def test_the_benchmarks_import_at_the_top_except_what_is_slow_or_optional():
    """A function-local import in alexnet_tf/bench/ says on its line why it waits (a slow
    or an optional import); importing the command's package loads no TensorFlow, so that
    `python -m alexnet_tf.bench` quiets TensorFlow's start-up first."""
    folder = os.path.dirname(bench.__file__)
    unexplained = []
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        with open(os.path.join(folder, name)) as f:
            for n, line in enumerate(f, 1):
                if re.match(r"\s+(import \w|from \S+ import )", line) and not re.search(
                    r"#.*\b(slow|optional)\b", line
                ):
                    unexplained.append(f"alexnet_tf/bench/{name}:{n}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)
    code = "import sys, alexnet_tf.bench; sys.exit(' '.join(m for m in sys.modules if m in ('tensorflow', 'keras')) or None)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
