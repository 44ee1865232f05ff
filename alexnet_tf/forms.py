"""How the net and its step are computed on a device (the config's `compute` section):
forms that give the same numbers at different speeds, chosen once per run.

`resolve(device_kind, precision, compute)` is a pure function from the device kind ("cpu"
or "gpu"), the precision (train.precision) and the `compute` section ("auto" where the
recipe leaves the choice to this table) to concrete `Forms`; `for_run(config, kind)` is
the same for a run's whole config. The runtime holds the result (`distribute.Runtime`);
the config keeps what was asked. Every form is numerically the same net
(tests/test_model.py and tests/test_train.py compare their outputs and one SGD step);
only speed differs:

- conv_form: conv2/4/5's two groups as one grouped Conv2D ("grouped": on a GPU, XLA runs
  it as one convolution with feature_group_count=2) or as two convolutions on channel
  halves + concat ("split": TensorFlow's oneDNN kernels on a CPU; Keras' grouped Conv2D
  always goes through an XLA function there, which runs XLA's slower CPU convolutions).
- lrn_impl: the LRN's window sum over 5 maps as 5 shifted slices ("ops": XLA fuses them
  into one pass on a GPU) or as a matmul with a band matrix ("matmul": without XLA the
  slices and their gradients make ~20 passes over the largest activations, the matmul 3).
- update_op: Sec. 5's momentum step as Keras' five elementwise ops per variable ("keras":
  XLA fuses them) or as TensorFlow's fused ResourceApplyKerasMomentum kernel ("fused":
  one pass over each variable instead of five without XLA).
- jit_compile: XLA for the step. On a GPU it fuses the elementwise work; on a CPU
  TensorFlow's own oneDNN convolutions and matmuls are faster than XLA's (twice, for the
  paper's net, README "Training speed").
- fused_update: the Sec. 5 update inside the step's XLA program (one device, XLA on).

The measurements behind the table are in the README's "Training speed" section.
"""

from __future__ import annotations

import dataclasses

from alexnet_tf.config import ComputeConfig, Config

# (device kind, precision) -> the fastest correct forms measured there.
TABLE = {
    ("gpu", "float32"): {"conv_form": "grouped", "lrn_impl": "ops", "update_op": "keras", "jit_compile": True},
    ("gpu", "mixed_bfloat16"): {"conv_form": "grouped", "lrn_impl": "ops", "update_op": "keras", "jit_compile": True},
    ("cpu", "float32"): {"conv_form": "split", "lrn_impl": "matmul", "update_op": "fused", "jit_compile": False},
    ("cpu", "mixed_bfloat16"): {"conv_form": "split", "lrn_impl": "matmul", "update_op": "fused", "jit_compile": False},
}
FIELDS = ("conv_form", "lrn_impl", "update_op", "jit_compile")


@dataclasses.dataclass(frozen=True)
class Forms:
    """The resolved forms of one run; `chosen` names the fields that were "auto"."""

    device_kind: str
    precision: str
    conv_form: str
    lrn_impl: str
    update_op: str
    jit_compile: bool
    fused_update: bool
    chosen: tuple = ()

    def describe(self) -> str:
        """One line for the log: `forms on cpu, float32: conv_form=split (auto), ...`."""
        parts = []
        for name in (*FIELDS, "fused_update"):
            parts.append(f"{name}={getattr(self, name)}" + (" (auto)" if name in self.chosen else ""))
        return f"forms on {self.device_kind}, {self.precision}: " + ", ".join(parts)

    def as_dict(self) -> dict:
        """The JSON fields `bench train` prints."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("chosen",)} | {"auto": list(self.chosen)}


def resolve(
    device_kind: str, precision: str, compute: ComputeConfig, deterministic: bool = False, columns: bool = False
) -> Forms:
    """The forms for `device_kind` ("cpu" or "gpu"; anything else counts as "gpu") and
    `precision`: each "auto" in `compute` from TABLE, the other values as they are. XLA
    stays off where it cannot run: `deterministic` runs (no deterministic XLA max-pooling
    gradient) and the `columns` strategy (two devices), which also takes the fused update
    (it runs on each variable's device, Keras' ops on the first)."""
    kind = "cpu" if device_kind == "cpu" else "gpu"
    row = TABLE[(kind, precision)]
    values, chosen = {}, []
    for name in FIELDS:
        value = getattr(compute, name)
        if value == "auto":
            value, _ = row[name], chosen.append(name)
        values[name] = value
    if "jit_compile" in chosen and (deterministic or columns):
        values["jit_compile"] = False
    if "update_op" in chosen and columns:  # no XLA; the fused kernel runs beside each variable
        values["update_op"] = "fused"
    fused = bool(values["jit_compile"] and compute.fused_update)
    return Forms(kind, precision, fused_update=fused, chosen=tuple(chosen), **values)


def for_run(config: Config, device_kind: str) -> Forms:
    """The forms of a run of `config` on `device_kind` (see `resolve`)."""
    t = config.train
    columns = config.distribute.strategy == "columns"
    return resolve(device_kind, t.precision, config.compute, deterministic=t.deterministic, columns=columns)


def device_kind(strategy=None, devices=()) -> str:
    """ "gpu" if `devices` (when given: the columns' devices), else the strategy's replicas
    (or, without a strategy or with the default one, this process) run on GPUs, else "cpu"."""
    import tensorflow as tf

    if not devices and strategy is not None:
        try:
            devices = strategy.extended.worker_devices
        except RuntimeError:  # the default strategy has no worker devices: this process decides
            devices = ()
    if devices:
        return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
