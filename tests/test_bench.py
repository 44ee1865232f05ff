"""The input benchmark runs end to end and prints one JSON line per pipeline."""

import argparse
import json

from alexnet_tf import bench


def test_bench_input_prints_json_lines(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    args = argparse.Namespace(data=None, split="train", out=str(out), seconds=0.5, cores=1, images=16)
    results = bench.bench_input(args)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["pipeline"] for r in lines] == ["alexnet_tf", "alexnet_tf_host_float", "pil_baseline"]
    for r in lines:
        assert r["images_per_sec_per_core"] > 0 and r["cores"] == 1
        assert abs(r["images_per_sec"] - r["images_per_sec_per_core"]) < 0.2
    assert "speedup_vs_pil_baseline" in lines[0]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines == results
