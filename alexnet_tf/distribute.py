"""The runtime a run trains on, decided once (`make_runtime`): the tf.distribute strategy
from the recipe's `distribute` section, which process is the chief, the dtype policy,
what runs inside XLA, determinism and seeds. The step builders receive the `Runtime`."""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import forms as forms_lib
from alexnet_tf.config import Config, ConfigError, DataConfig, DistributeConfig


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how a run computes.

    strategy: the tf.distribute strategy (one device, mirrored, multi-worker)
    chief: this process writes the run's files
    task: this process's task ("worker1", ...; "" with one process)
    precision: the Keras dtype policy (float32, mixed_bfloat16)
    jit: the step functions are XLA-compiled
    update_in_xla: the SGD update runs inside the compiled training step (one device
        only: a mirrored variable's update is a cross-replica merge_call, which XLA cannot
        hold; TensorFlow fails with "failed to lift variable creations")
    columns: Sec. 3.2's placement, (column A's device, column B's), or ()
    forms: how the net and its step are computed on this device: the config's `compute`
        section resolved (`alexnet_tf.forms`)
    """

    strategy: tf.distribute.Strategy
    forms: forms_lib.Forms
    chief: bool = True
    task: str = ""
    precision: str = "float32"
    tf32: bool = False
    jit: bool = False
    update_in_xla: bool = False
    columns: tuple = ()

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def compute_dtype(self) -> str:
        return keras.DTypePolicy(self.precision).compute_dtype

    def policy(self):
        """The dtype policy as a context: build models and steps inside it."""
        return dtype_policy(self.precision)

    def describe(self) -> str:
        where = f"{self.replicas} replica(s)" + (f", columns on {' and '.join(self.columns)}" if self.columns else "")
        xla = ("XLA, the update inside" if self.update_in_xla else "XLA") if self.jit else "no XLA"
        precision = self.precision
        if precision == "float32" and tf.config.list_logical_devices("GPU"):
            precision += " (TF32 on)" if self.tf32 else " (TF32 off)"
        return f"{where}, {precision}, {xla}"


def make_runtime(config: Config, strategy: tf.distribute.Strategy | None = None) -> Runtime:
    """The Runtime of a run of `config` (its resolved config: `alexnet_tf.runconfig`): sets
    up determinism, seeds and TF32 (`setup_runtime`), makes the strategy (or takes
    `strategy`, made from the same `distribute` section) and decides what runs where, the
    `compute` section's "auto" forms included (`alexnet_tf.forms`), for its devices. The
    config is left as it is. Call before building anything."""
    setup_runtime(config)
    strategy = strategy or make_strategy(config.distribute)
    columns = tuple(column_devices(config.distribute)) if config.distribute.strategy == "columns" else ()
    forms = forms_lib.for_run(config, forms_lib.device_kind(strategy, columns))
    return Runtime(
        strategy=strategy,
        chief=is_chief(strategy),
        task=task_name(strategy),
        precision=config.train.precision,
        tf32=config.train.tf32,
        jit=forms.jit_compile,
        update_in_xla=forms.fused_update and single_device(strategy),
        columns=columns,
        forms=forms,
    )


def parse_devices(spec: str) -> list[str]:
    """`cpu:2` -> two logical CPU devices; `gpu:0,gpu:1` -> those devices; "" -> []."""
    spec = spec.strip()
    if not spec:
        return []
    kind, _, count = spec.partition(":")
    if kind.lower() == "cpu" and count.isdigit() and "," not in spec:
        n = int(count)
        configure_logical_cpus(n)
        return [f"/cpu:{i}" for i in range(n)]
    return ["/" + d.strip().lstrip("/") for d in spec.split(",") if d.strip()]


def configure_logical_cpus(n: int) -> None:
    """Splits the CPU into n logical devices (must happen before TF starts its runtime)."""
    cpus = tf.config.list_physical_devices("CPU")
    have = tf.config.get_logical_device_configuration(cpus[0])
    if have is not None and len(have) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != n:
            raise ConfigError(
                f"distribute.devices=cpu:{n}: the TensorFlow runtime already started with {current} "
                "logical CPU(s); set it before anything else touches TensorFlow"
            ) from e


def make_strategy(config: DistributeConfig) -> tf.distribute.Strategy:
    devices = parse_devices(config.devices)
    kind = config.strategy
    if kind == "auto":
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        kind = "mirrored" if len(devices) > 1 else "one_device"
    if kind == "one_device":
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [gpus[0].name if gpus else "/cpu:0"]
        return tf.distribute.OneDeviceStrategy(devices[0])
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices or None)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "columns":
        column_devices(config)
        # One replica; alexnet_tf.columns places the ops of each column itself.
        return tf.distribute.get_strategy()
    raise ConfigError(f"distribute.strategy={kind!r}; valid values: auto, one_device, mirrored, multi_worker, columns")


def single_device(strategy: tf.distribute.Strategy) -> bool:
    """True for one replica without cross-device machinery (OneDeviceStrategy or none),
    where variables may be updated inside an XLA program."""
    if strategy.num_replicas_in_sync != 1:
        return False
    return not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def column_devices(config: DistributeConfig) -> list[str]:
    """The two devices of `distribute.strategy=columns`: column A's, then column B's."""
    devices = parse_devices(config.devices) or [d.name for d in tf.config.list_logical_devices("GPU")][:2]
    if len(devices) != 2:
        raise ConfigError(
            f"distribute.strategy=columns needs two devices (distribute.devices=gpu:0,gpu:1 or cpu:2), got {devices or 'none'}"
        )
    return devices


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one process that writes the run's files: the `chief` task if TF_CONFIG has
    one, else worker 0 (or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return True
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type in (None, "worker") and not resolver.task_id


def task_name(strategy: tf.distribute.Strategy) -> str:
    """`worker1`, `chief0`, ...: this process's task, "" with one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type}{resolver.task_id}" if resolver is not None and resolver.task_type else ""


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits until every worker has reached this point (a one-number all-reduce)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        tf.function(lambda: strategy.reduce("SUM", strategy.run(lambda: tf.ones([])), axis=None))()


def check_same_step(strategy: tf.distribute.Strategy, step: int) -> None:
    """Raises ConfigError on every worker unless all workers stand at `step` (the
    variance of their steps, all-reduced, is 0)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    s = float(step)
    per_replica = lambda: tf.constant([s, s * s, 1.0], tf.float64)  # noqa: E731
    total, squares, n = tf.function(lambda: strategy.reduce("SUM", strategy.run(per_replica), axis=None))().numpy()
    if squares / n - (total / n) ** 2 > 0.5:
        raise ConfigError(
            f"the workers resumed from different steps (this one from {step}); the workers of one run "
            "need one shared --workdir"
        )


def setup_runtime(config: Config) -> None:
    """Determinism and seeds; call before building anything.

    Op determinism is process-wide in TensorFlow: switch it off again for a
    non-deterministic run that follows a deterministic one in the same process.
    """
    from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    # TensorFlow runs float32 matmuls and convolutions as TF32 on Ampere and newer GPUs
    # unless told otherwise: float32 means float32 unless train.tf32 asks for TF32
    tf.config.experimental.enable_tensor_float_32_execution(config.train.tf32)
    keras.utils.set_random_seed(config.train.seed)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets the Keras dtype policy for the duration of a run."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distributed_dataset(
    runtime: Runtime,
    source: data_lib.Source,
    data: DataConfig,
    seed: int,
    split: str,
    global_batch: int,
    training: bool,
    epoch: int = 0,
    skip_batches: int = 0,
    bad_files: data_lib.BadFiles | None = None,
) -> tf.distribute.DistributedDataset:
    """One epoch of `split` for every replica (eval: the first data.eval_examples)."""

    def fn(ctx: tf.distribute.InputContext):
        batch = ctx.get_per_replica_batch_size(global_batch)
        if training:
            return data_lib.train_dataset(source, data, split, batch, seed, epoch, skip_batches, ctx, bad_files)
        return data_lib.eval_dataset(
            source, data, split, batch, limit=data.eval_examples, input_context=ctx, bad_files=bad_files
        )

    return runtime.strategy.distribute_datasets_from_function(fn)
