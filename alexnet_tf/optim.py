"""The paper's SGD rule and learning-rate schedule (Sec. 5).

    v <- 0.9 v - 0.0005 * lr * w - lr * dL/dw
    w <- w + v

This is Keras SGD(momentum=0.9) applied to dL/dw + 0.0005 * w: the decay sits inside the
momentum update. Keras' own `weight_decay=` argument is decoupled and is not this rule.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_tf.config import OptimConfig

PAPER_BATCH = 128  # Sec. 5


def base_lr(config: OptimConfig, global_batch: int) -> float:
    """Sec. 5's lr, scaled linearly from the paper's batch of 128 if `scale_lr`."""
    return config.lr * (global_batch / PAPER_BATCH if config.scale_lr else 1.0)


def build_optimizer(config: OptimConfig, global_batch: int) -> keras.optimizers.SGD:
    return keras.optimizers.SGD(learning_rate=base_lr(config, global_batch), momentum=config.momentum, nesterov=False)


def decays(variable, config: OptimConfig) -> bool:
    """Weights are decayed; biases only with `decay_biases`."""
    return config.weight_decay > 0 and (config.decay_biases or len(variable.shape) > 1)


def add_weight_decay(grads, variables, config: OptimConfig, scale: float = 1.0):
    """dL/dw + scale * weight_decay * w for the decayed variables (Sec. 5).

    Under a strategy each replica passes scale = 1 / replicas, since the replicas'
    gradients are summed.
    """
    wd = config.weight_decay * scale
    return [
        g + tf.cast(wd, g.dtype) * tf.cast(v, g.dtype) if decays(v, config) else g for g, v in zip(grads, variables)
    ]


class LearningRateSchedule(tf.Module):
    """Epoch-level control of the learning rate, with its state in variables so that a
    checkpoint restores it.

    plateau (Sec. 5): divide by 10 when the validation error stops improving, at most
    three times. step: multiply by `lr_factor` at each epoch in `step_epochs`.
    """

    def __init__(self, config: OptimConfig, global_batch: int):
        super().__init__(name="lr_schedule")
        self.config = config
        self.base = base_lr(config, global_batch)
        self.best_error = tf.Variable(float("inf"), trainable=False, name="best_error")
        self.bad_epochs = tf.Variable(0, trainable=False, name="bad_epochs")
        self.reductions = tf.Variable(0, trainable=False, name="reductions")

    def lr(self, epoch: int) -> float:
        """The learning rate to use during `epoch` (0-based)."""
        c = self.config
        if c.schedule == "step":
            n = sum(1 for e in c.step_epochs if epoch >= e)
            return self.base * c.lr_factor**n
        if c.schedule == "plateau":
            return self.base * c.lr_factor ** int(self.reductions.numpy())
        return self.base

    def end_epoch(self, eval_error: float) -> bool:
        """Records an epoch's validation error; True when the lr was just reduced."""
        c = self.config
        if c.schedule != "plateau":
            return False
        if eval_error < float(self.best_error.numpy()) - c.plateau_threshold:
            self.best_error.assign(eval_error)
            self.bad_epochs.assign(0)
            return False
        self.bad_epochs.assign_add(1)
        if int(self.bad_epochs.numpy()) >= c.plateau_patience and int(self.reductions.numpy()) < c.max_reductions:
            self.reductions.assign_add(1)
            self.bad_epochs.assign(0)
            return True
        return False
