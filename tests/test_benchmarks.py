"""The development tools of benchmarks/ (`python -m benchmarks.NAME` from the clone's
root): the speed tables beside the PyTorch peer's, the JPEG folders."""

import json
import os
import statistics
import subprocess
import sys

import pytest
from helpers import ROOT, benchmark

compare = benchmark("compare")
jpegs = benchmark("jpegs")


def _ours(batch, dtype, per_call, rate, **extra):
    return {
        "bench": "train",
        "recipe": "recipes/paper.py",
        "input": "synthetic",
        "feed": "device",
        "batch": batch,
        "dtype": dtype,
        "overrides": [],
        "steps_per_loop": per_call,
        "img_per_s": rate,
        "device": "1 x NVIDIA H100",
        "train_flops_per_image": 6 * compare.PAPER_FORWARD_MACS,
        "mfu": 0.25,
        "peak_memory_bytes": 3 * 2**30,
        "tf_version": "2.21.0",
        "keras_version": "3.15.1",
        **extra,
    }


def _peer(batch, dtype, compiled, rate):
    return {
        "model": "paper_alexnet_grouped_lrn",
        "batch": batch,
        "dtype": dtype,
        "compile": compiled,
        "img_per_s": rate,
    }


def test_compare_sets_each_setting_beside_the_peer(tmp_path, capsys):
    quick = {"recipe": "recipes/quickstart.py", "train_flops_per_image": 6 * 5_145_096, "device": "CPU: Xeon"}
    forms = {"conv_form": "split", "lrn_impl": "matmul", "update_op": "fused", "jit_compile": False}
    ours = [
        _ours(128, "bf16", 1, 15000.0),
        _ours(128, "bf16", 20, 17000.0),
        _ours(128, "tf32", 20, 9000.0),
        _ours(128, "bf16", 20, 16000.0, overrides=["compute.conv_form=split"]),
        _ours(128, "bf16", 20, 13000.0, input="tfrecord:/tmp/gen-256", feed="pipeline"),
        _ours(8, "fp32", 1, 100.0, recipe="recipes/quickstart.py", train_flops_per_image=1),
        _ours(128, "fp32", 1, 2100.0, **quick, forms=forms),  # two alternating runs of one setting
        _ours(128, "fp32", 1, 2300.0, **quick, forms=forms),
        {"bench": "train_host_overhead", "batch": 128, "dtype": "bf16", "host_ms_per_call": 0.5},
    ]
    (tmp_path / "tf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ours))
    peer = [
        _peer(128, "bf16", False, 8000.0),
        _peer(128, "bf16", True, 12500.0),
        _peer(128, "tf32", False, 8000.0),
        _peer(128, "tf32", True, 7000.0),
        {"model": "paper", "batch": 512, "dtype": "bf16", "error": "OOM"},
    ]
    # benchmarks/torch_peer.py's lines: the net named and counted; runs alternate with ours
    for mode, rate in (("eager", 1900.0), ("compile", 2500.0), ("eager", 1950.0), ("compile", 2400.0)):
        peer.append({"bench": "torch_train", "model": "quickstart", "mode": mode, "compile": mode == "compile"})
        peer[-1].update(batch=128, dtype="fp32", img_per_s=rate, train_flops_per_image=6 * 5_145_096)
    (tmp_path / "torch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in peer))
    assert compare.main([str(tmp_path / "tf.jsonl"), str(tmp_path / "torch.jsonl")]) == 0
    by_files = capsys.readouterr().out
    # from the clone's root, as benchmarks/cpu_compare.sh runs it, on the --out folder of both: the same table
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", os.path.relpath(tmp_path, ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == by_files
    rows = {line.split(" | ")[0].strip("| "): line for line in by_files.splitlines()}
    # the fastest steps-per-loop against the faster PyTorch mode: 17,000 / 12,500
    assert (
        "15,000 (1), 17,000 (20)" in rows["paper, 128, bf16"]
        and "| 8,000 | 12,500 | 1.36x (meets 1.3x) |" in rows["paper, 128, bf16"]
    )
    assert "25.0%" in rows["paper, 128, bf16"] and "3.0 GiB" in rows["paper, 128, bf16"]
    # tf32 against the peer's best, eager here
    assert "| 8,000 | 7,000 | 1.12x (below 1.3x) |" in rows["paper, 128, tf32"]
    assert "1.28x (below 1.3x)" in rows["paper, 128, bf16, compute.conv_form=split"]
    assert "no peer line" in rows["quickstart, 8, fp32"]
    # every run of both sides; the ratio of the bests: 2,300 / 2,500
    line = rows["quickstart, 128, fp32"]
    assert "| 2,100 (1), 2,300 (1) | split, LRN matmul, update fused, no XLA |" in line
    assert "| 1,900, 1,950 | 2,500, 2,400 | 0.92x (below 1.3x); per round 0.84, 0.96 |" in line
    assert "| 128, bf16 | 13,000 (20) | 1.08x of 12,000 |" in rows["tfrecord:/tmp/gen-256"]
    assert any(k.startswith("Failed: paper batch 512 bf16: OOM") for k in rows)
    assert compare.main([str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "peer_only.jsonl").write_text(json.dumps(peer[0]))
    assert compare.main([str(tmp_path / "peer_only.jsonl")]) == 2


def test_compare_sets_the_savedmodel_beside_the_peer(tmp_path, capsys):
    def line(bench_name, batch, rate, p50, p99, **extra):
        row = {"bench": bench_name, "batch": batch, "dtype": "fp32", "img_per_s": rate, "p50_ms": p50, "p99_ms": p99}
        return {**row, **extra}

    rows = [
        line("export", 32, 900.0, 35.0, 40.0, net="quickstart", device="CPU"),
        line("export", 32, 1000.0, 31.0, 33.0, net="quickstart", device="CPU"),
        line("export", 1, 250.0, 4.0, 6.0, net="quickstart", device="CPU"),
        line("torch_infer", 32, 800.0, 40.0, 45.0, model="quickstart", mode="eager"),
        line("torch_infer", 32, 1250.0, 25.6, 30.0, model="quickstart", mode="compile"),
        line("export", 1, 260.0, 4.2, 5.0, net="quickstart", device="CPU"),
        line("torch_infer", 1, 200.0, 4.4, 7.5, model="quickstart", mode="eager"),
        line("torch_infer", 1, 100.0, 10.0, 12.0, model="quickstart", mode="compile"),
        # `--runtime session` lines: a row of their own beside the peer's same lines
        line("export", 32, 1300.0, 24.0, 26.0, net="quickstart", device="CPU", runtime="session"),
        line("export", 1, 400.0, 2.2, 2.5, net="quickstart", device="CPU", runtime="session"),
    ]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert compare.main([str(tmp_path / "all.jsonl")]) == 0
    table = {" | ".join(r.split(" | ")[:2]).strip("| "): r for r in capsys.readouterr().out.splitlines()}
    # batch 32: the best of two runs (1,000, p50 31 ms) against torch.compile's 1,250;
    # lines without a runtime are tf.saved_model.load's (the only one before --runtime)
    assert table["quickstart, 32, fp32 | tf.saved_model.load"].endswith(
        "| 900, 1,000 | 31.0 / 33.0 | 800 | 1,250 | 25.6 / 30.0 | 0.80x (below 1.0x) |"
    )
    # batch 1: latency, the lowest p50 of each side (4.0 ms ours, eager's 4.4 ms), not the
    # throughput (260 / 200 img/s)
    assert table["quickstart, 1, fp32 | tf.saved_model.load"].endswith(
        "| 250, 260 | 4.0 / 6.0 | 200 | 100 | 4.4 / 7.5 | 1.10x p50 (meets 1.0x) |"
    )
    assert table["quickstart, 32, fp32 | Session, as served"].endswith(
        "| 1,300 | 24.0 / 26.0 | 800 | 1,250 | 25.6 / 30.0 | 1.04x (meets 1.0x) |"
    )
    assert table["quickstart, 1, fp32 | Session, as served"].endswith(
        "| 400 | 2.2 / 2.5 | 200 | 100 | 4.4 / 7.5 | 2.00x p50 (meets 1.0x) |"
    )


def test_jpegs_from_fashion_mnist_writes_a_coloured_folder(tmp_path):
    """`python -m benchmarks.jpegs --out OUT --from fashion_mnist:DIR`: the README's folder layout, each image
    in two colours (its grey levels mapped between them), at --size px, from indices
    clear of the bundled subset."""
    import gzip

    import numpy as np
    from PIL import Image

    from alexnet_tf import data as data_lib

    rng = np.random.default_rng(0)
    raw = tmp_path / "fashion"
    raw.mkdir()
    arrays = {"train": np.zeros((38_000, 28, 28), np.uint8), "t10k": np.zeros((7_000, 28, 28), np.uint8)}
    labels = {
        "train": rng.integers(0, 10, 38_000).astype(np.uint8),
        "t10k": rng.integers(0, 10, 7_000).astype(np.uint8),
    }
    arrays["train"][30_000:30_040] = rng.integers(0, 256, (40, 28, 28))
    arrays["t10k"][5_000:5_010] = rng.integers(0, 256, (10, 28, 28))
    for name in arrays:
        with gzip.open(raw / f"{name}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + arrays[name].tobytes())
        with gzip.open(raw / f"{name}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels[name].tobytes())
    out = tmp_path / "folder"
    argv = ["--out", str(out), "--from", f"fashion_mnist:{raw}", "--images", "40", "--size", "36"]
    assert jpegs.main(argv) == 0
    source = data_lib.open_source(f"folder:{out}")
    assert source.sizes == {"train": 40, "val": 10, "validation": 10} and source.num_classes == 10
    fashion = data_lib.open_source(f"fashion_mnist:{raw}").class_names  # T-shirt/top, Trouser, ...
    folder = fashion[labels["train"][30_000]].replace("/", "_").replace(" ", "_")
    path = out / "train" / folder / "30000.jpg"
    picture = np.asarray(Image.open(path), np.float32)
    assert picture.shape == (36, 36, 3)
    # two colours: every pixel lies near the line between them, and they differ by channel
    grey = np.asarray(Image.fromarray(arrays["train"][30_000]).resize((36, 36), Image.BILINEAR), np.float32) / 255
    design = np.stack([np.ones(grey.size), grey.ravel()], 1)
    fit, residual, *_ = np.linalg.lstsq(design, picture.reshape(-1, 3), rcond=None)
    assert np.sqrt(residual / grey.size).max() < 25  # JPEG's error on noise (another picture: ~70)
    assert np.ptp(fit[1]) > 10  # the garment's colour minus the ground's is not grey


def test_jpegs_of_digits_are_thin_light_strokes_on_black(tmp_path):
    import numpy as np
    from PIL import Image

    from alexnet_tf import data as data_lib

    out = tmp_path / "digits"
    assert jpegs.main(["--out", str(out), "--from", "digits", "--images", "40", "--size", "28"]) == 0
    source = data_lib.open_source(f"folder:{out}")
    assert source.sizes["train"] == 40 and source.sizes["val"] == 10
    assert source.class_names == [str(d) for d in range(10)]
    pictures = np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(out.glob("train/*/*.jpg"))])
    assert pictures.shape == (40, 28, 28, 3)
    grey = pictures.mean(-1)
    assert np.median(grey) < 25 and (grey > 150).mean() > 0.03  # a dark ground, some bright stroke
    assert (grey > 150).mean() < 0.3  # thin strokes, not filled shapes


@pytest.mark.slow
def test_input_scale_projects_cores_from_the_cpu_rate(tmp_path):
    """`python -m benchmarks.input_scale` at a tiny size, from the clone's root: every
    variant and thread count timed in every round, lower JPEG quality stores fewer bytes,
    and the table's medians and cores per GPU follow from the JSON lines."""
    out = tmp_path / "scale"
    cmd = [sys.executable, "-m", "benchmarks.input_scale", "--out", str(out), "--images", "96"]
    cmd += [
        "--qualities",
        "95",
        "60",
        "--cores",
        "1",
        "2",
        "--rounds",
        "2",
        "--seconds",
        "0.3",
        "--no-cached",
        "--no-folder",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    turns = [json.loads(line) for line in (out / "input_scale.jsonl").read_text().splitlines()]
    assert sorted({(t["variant"], t["threads"]) for t in turns}) == [
        ("q60", 1),
        ("q60", 2),
        ("q95", 1),
        ("q95", 2),
    ]
    assert all(
        len([u for u in turns if (u["variant"], u["threads"]) == (t["variant"], t["threads"])]) == 2 for t in turns
    )
    rows = [r.split("|")[1:-1] for r in (out / "input_scale.md").read_text().splitlines()[2:]]
    assert len(rows) == 4
    by_name = {"quality 95": "q95", "quality 60": "q60"}
    sizes = {}
    for stored, threads, wall, cpu, size, need in rows:
        name = next(v for k, v in by_name.items() if k in stored)
        mine = [t for t in turns if t["variant"] == name and t["threads"] == int(threads)]
        median_cpu = statistics.median(t["img_per_cpu_s"] for t in mine)
        assert float(cpu.replace(",", "")) == pytest.approx(median_cpu, abs=0.5)
        assert float(wall.replace(",", "")) == pytest.approx(statistics.median(t["img_per_s"] for t in mine), abs=0.5)
        low, high = (float(x) for x in need.split("/"))
        assert low == pytest.approx(8000 / median_cpu, abs=0.051)
        assert high == pytest.approx(15000 / median_cpu, abs=0.051)
        sizes[name] = float(size.replace(",", ""))
    assert sizes["q60"] < sizes["q95"]
