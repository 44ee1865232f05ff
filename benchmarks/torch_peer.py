"""The PyTorch peer of `python -m alexnet_tf.bench train` and `bench export`.

Times the same net (`torch_net.py`: two columns with grouped conv2/4/5, LRN in the
paper's convention, overlapping pooling, dropout on fc6's and fc7's outputs) in PyTorch,
eager and torch.compile, and prints one JSON line per setting with the fields `bench
train` prints (`batch`, `dtype`, `img_per_s`, `step_ms`) plus `model` and `mode`, so that
`python -m benchmarks.compare` sets the lines side by side (from the clone's root, as
every tool in benchmarks/).

    # training step: SGD momentum 0.9, weight decay 5e-4 in the gradient (Sec. 5)
    python -m benchmarks.torch_peer train --models paper --batches 32 --dtypes fp32 bf16 --modes eager compile
    # inference as `bench export` times it: batch 32 throughput, batch 1 latency p50/p99
    python -m benchmarks.torch_peer infer --models quickstart --modes eager compile

On a CPU, bf16 is torch.autocast("cpu", dtype=torch.bfloat16); on a GPU, bf16 is CUDA
autocast and fp32 runs with TF32 matmuls and convolutions, reported as `tf32` (as
TensorFlow does by default). Batches are synthetic and made once on the device, as
`bench train --synthetic` makes them. Needs torch (`pip install "alexnet_tf[peer]"` or
`pip install torch`); nothing in alexnet_tf imports this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from benchmarks import torch_net

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # Sec. 5
RESIZE = {"paper": 256, "quickstart": 76}  # the recipes' data.resize_size (centre crop at serving)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    except OSError:
        return platform.processor() or "CPU"


def precision(device: torch.device, dtype: str):
    """(context for the step, the dtype name as reported) of --dtypes fp32|tf32|bf16."""
    if device.type == "cuda":
        tf32 = dtype != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if dtype == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16), "bf16"
        return contextlib.nullcontext(), "tf32" if tf32 else "fp32"
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16), "bf16"
    return contextlib.nullcontext(), "fp32"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_net(args, model: str, device: torch.device):
    net = torch_net.build(model, args.dropout_form)
    torch_net.recipe_init(net, model)
    net = net.to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _images(args, model: str, batch: int, size: int, device: torch.device) -> torch.Tensor:
    # the centred pixels as the recipe feeds them: 0..255 scale (paper), unit spread (quickstart)
    x = torch.randn(batch, 3, size, size, device=device) * (64.0 if model == "paper" else 1.0)
    return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x


def time_train(args, model: str, batch: int, dtype: str, mode: str, device: torch.device) -> dict:
    """Times `args.steps` training steps (forward, cross-entropy, backward, SGD update)."""
    size, _, classes = torch_net.GEOMETRY[model]
    net = make_net(args, model, device).train()
    optimizer = torch.optim.SGD(
        torch_net.param_groups(net, WEIGHT_DECAY), lr=LR * batch / 128, momentum=MOMENTUM, foreach=True
    )
    autocast, dtype_name = precision(device, dtype)
    images = _images(args, model, batch, size, device)
    labels = torch.randint(0, classes, (batch,), device=device)

    def loss_of(x, y):
        with autocast:
            return F.cross_entropy(net(x).float(), y)

    forward = torch.compile(loss_of) if mode == "compile" else loss_of

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(images, labels)
        loss.backward()
        optimizer.step()
        return loss

    start = time.perf_counter()
    step()
    synchronize(device)
    compile_seconds = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss = loss.item()  # waits for the last step
    seconds = time.perf_counter() - start
    return {
        "bench": "torch_train",
        "dtype": dtype_name,
        "img_per_s": round(batch * args.steps / seconds, 1),
        "step_ms": round(1000 * seconds / args.steps, 3),
        "loss": round(loss, 4),
        "compile_seconds": round(compile_seconds, 2),
    }


def _latencies(fn, x, n: int, device: torch.device) -> list:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn(x)
        synchronize(device)
        out.append(1000 * (time.perf_counter() - start))
    return out


def _percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def time_infer(args, model: str, batch: int, dtype: str, mode: str, device: torch.device) -> dict:
    """As `bench export` times the SavedModel: uint8 images at the recipe's resize size in,
    centre crop, mean subtraction, the net, softmax and top-5 out; batch-`batch`
    throughput and per-call latency (p50, p99)."""
    size, _, classes = torch_net.GEOMETRY[model]
    resize, top = RESIZE[model], (RESIZE[model] - size) // 2
    net = make_net(args, model, device).eval()
    autocast, dtype_name = precision(device, dtype)
    mean = torch.full((1, 3, size, size), 120.0, device=device)

    def predict(images):  # (B, R, R, 3) uint8
        with autocast:
            x = images[:, top : top + size, top : top + size, :].permute(0, 3, 1, 2).float() - mean
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            probs = torch.softmax(net(x).float(), dim=-1)
            return torch.topk(probs, min(5, classes))

    # no_grad around the call: torch.compile cannot trace into inference_mode
    compiled = torch.compile(predict) if mode == "compile" else predict

    def fn(images):
        with torch.no_grad():
            return compiled(images)

    images = torch.randint(0, 256, (batch, resize, resize, 3), dtype=torch.uint8, device=device)
    start = time.perf_counter()
    fn(images)
    synchronize(device)
    compile_seconds = time.perf_counter() - start
    _latencies(fn, images, args.warmup, device)
    calls = _latencies(fn, images, args.steps, device)
    seconds = sum(calls) / 1000
    return {
        "bench": "torch_infer",
        "dtype": dtype_name,
        "img_per_s": round(batch * len(calls) / seconds, 1),
        "step_ms": round(1000 * seconds / len(calls), 3),
        "p50_ms": round(_percentile(calls, 50), 3),
        "p99_ms": round(_percentile(calls, 99), 3),
        "calls": len(calls),
        "compile_seconds": round(compile_seconds, 2),
    }


def run(args) -> list:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    # TensorFlow's CPU kernels flush denormals to zero; so does the peer (else tiny
    # activations of a small-init net cost x86 CPUs orders of magnitude in time)
    torch.set_flush_denormal(True)
    timer = time_train if args.task == "train" else time_infer
    batches = args.batches or ([32] if args.task == "train" else [32, 1])
    results = []
    for model in args.models:
        size = torch_net.GEOMETRY[model][0]
        macs = torch_net.forward_macs(torch_net.build(model), size)
        for dtype in args.dtypes:
            for batch in batches:
                for mode in args.modes:
                    common = {
                        "model": model,
                        "mode": mode,
                        "compile": mode == "compile",
                        "batch": batch,
                        "dropout_form": args.dropout_form,
                        "channels_last": args.channels_last,
                        "train_flops_per_image": 6 * macs,
                        "forward_macs_per_image": macs,
                        "threads": torch.get_num_threads() if device.type == "cpu" else None,
                        "device": f"{device.type.upper()}: {device_name(device)}",
                        "torch_version": torch.__version__,
                    }
                    try:
                        row = {**common, **timer(args, model, batch, dtype, mode, device)}
                    except Exception as e:  # e.g. out of memory, or no compiler for torch.compile: go on
                        row = {**common, "dtype": dtype, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                    torch._dynamo.reset()
                    line = json.dumps(row)
                    print(line, flush=True)
                    if args.out:  # a folder, as `bench --out DIR`: OUT/torch.jsonl
                        os.makedirs(args.out, exist_ok=True)
                        with open(os.path.join(args.out, "torch.jsonl"), "a") as f:
                            f.write(line + "\n")
                    results.append(row)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("train", "infer"), help="training step, or inference as `bench export`")
    p.add_argument("--models", nargs="+", default=["paper"], choices=tuple(torch_net.GEOMETRY))
    p.add_argument("--batches", type=int, nargs="+", help="(default: train 32; infer 32 and 1)")
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=("fp32", "tf32", "bf16"))
    p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=("eager", "compile"))
    p.add_argument("--steps", type=int, default=20, help="timed steps (infer: timed calls) per setting")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (the first compiles)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's, all cores)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if there is one)")
    p.add_argument(
        "--dropout-form",
        choices=("inverted", "paper"),
        default="paper",
        help="inverted: kept units x 1/(1-p) in training (nn.Dropout, Keras); paper: Sec. 4.2, x (1-p) at test",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (as TensorFlow's)")
    p.add_argument("--out", help="also append the JSON lines to OUT/torch.jsonl (a folder, as bench --out)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be at least 1")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
