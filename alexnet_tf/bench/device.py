"""What the benchmarks say about the device they run on: its name, its peak FLOP/s, the
peak memory TensorFlow took on it, and TensorFlow's threads on the host."""

from __future__ import annotations

import platform

import tensorflow as tf

from alexnet_tf.bench.common import usable_cores
from alexnet_tf.config import ConfigError

# Dense tensor-core peaks in TFLOP/s from NVIDIA's data sheets for the SXM H100 (the H200
# has the same compute). "tf32": float32 with TF32 matmuls and convolutions, TensorFlow's
# GPU default; "fp32": without them. PCIe and NVL cards differ: pass --peak-tflops.
PEAK_TFLOPS = {
    "H100": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
}


def device_description(strategy) -> tuple:
    """(what the replicas run on, in words; the GPU's name, or "" on CPUs)."""
    devices = strategy.extended.worker_devices
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and any("GPU" in d.upper() for d in devices):
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "GPU")
        cc = details.get("compute_capability")
        return f"{len(devices)} x {name}" + (f" (compute capability {cc[0]}.{cc[1]})" if cc else ""), name
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU: {cpu}, {usable_cores()} usable cores, {len(devices)} replica device(s)", ""


def peak_tflops(gpu_name: str, dtype: str) -> float | None:
    """The dense peak of one GPU from PEAK_TFLOPS, or None where the table has no entry."""
    upper = gpu_name.upper()
    if not upper or "PCIE" in upper or "NVL" in upper:
        return None
    return next((peaks[dtype] for key, peaks in PEAK_TFLOPS.items() if key in upper), None)


def gpu_peak_memory(strategy, reset: bool = False) -> int | None:
    """Peak bytes TensorFlow allocated on the replicas' GPUs since the last reset (the
    largest over the replicas); None on CPUs."""
    gpus = [d.split("device:")[-1] for d in strategy.extended.worker_devices if "GPU" in d.upper()]
    if not gpus:
        return None
    if reset:
        for g in gpus:
            tf.config.experimental.reset_memory_stats(g)
        return None
    return max(tf.config.experimental.get_memory_info(g)["peak"] for g in gpus)


def set_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op threads (0: its default, all cores); before its
    runtime starts."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:  # the runtime has started: too late in this process
        raise ConfigError(f"--threads {threads}: TensorFlow's runtime has already started") from e
