"""Choosing a tf.distribute strategy from the recipe's `distribute` section."""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.config import ConfigError, DistributeConfig


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
