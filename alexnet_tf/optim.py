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


class FusedSGD(keras.optimizers.SGD):
    """keras.optimizers.SGD (momentum, not Nesterov) whose update of each variable is
    TensorFlow's one fused kernel ResourceApplyKerasMomentum (accum <- momentum * accum -
    lr * grad; var <- var + accum: Keras' rule) instead of five elementwise ops, each a pass
    over the variable: without XLA the update of the 61 M weights is a sixth of a CPU step."""

    def update_step(self, gradient, variable, learning_rate):
        if not self.momentum or self.nesterov:
            return super().update_step(gradient, variable, learning_rate)
        m = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=m.handle,
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_nesterov=False,
        )


def build_optimizer(config: OptimConfig, global_batch: int, update_op: str = "keras") -> keras.optimizers.SGD:
    """Sec. 5's SGD; its update as `update_op` says: "fused" (FusedSGD) or "keras" (the same
    numbers; a run passes its Runtime's, alexnet_tf.forms' choice for `compute.update_op`)."""
    kind = FusedSGD if update_op == "fused" else keras.optimizers.SGD
    return kind(learning_rate=base_lr(config, global_batch), momentum=config.momentum, nesterov=False)


def decays(variable, config: OptimConfig) -> bool:
    """Weights are decayed; biases only with `decay_biases`."""
    return config.weight_decay > 0 and (config.decay_biases or len(variable.shape) > 1)


def add_weight_decay(grads, variables, config: OptimConfig, scale: float = 1.0):
    """dL/dw + scale * weight_decay * w for the decayed variables (Sec. 5).

    Under a strategy each replica passes scale = 1 / replicas, since the replicas'
    gradients are summed.
    """
    wd = config.weight_decay * scale

    def decayed(g, v):
        with tf.device(g.device):  # beside the gradient (a column's, on its own device)
            return g + tf.cast(wd, g.dtype) * tf.cast(v, g.dtype)

    return [decayed(g, v) if decays(v, config) else g for g, v in zip(grads, variables)]


class LearningRateSchedule(tf.Module):
    """Epoch-level control of the learning rate, with its state in variables so that a
    checkpoint restores it.

    plateau (Sec. 5): divide by 10 (`lr_factor`) "when the validation error rate stopped
    improving with the current learning rate", three times (`max_reductions`) in the
    run's `epochs`:
      - an epoch improves when its error is below the best so far by more than
        `plateau_threshold`;
      - epochs without improvement count only once the error has improved at the
        current rate: at the start, once it has fallen `plateau_start_drop` below the
        first epoch's error (a net still at chance has not started, it is not on a
        plateau); after a cut, once an epoch at the new rate has improved;
      - `plateau_patience` counted epochs in a row cut the rate; the `plateau_cooldown`
        epochs after a cut are not counted;
      - a deadline, so that the paper's cuts fall within the run ("reduced three times
        prior to termination"): when the epochs left just hold the cuts still to come at
        `plateau_min_epochs` epochs each (by default epochs // (2 * (cuts + 1)), 11 of the
        paper's 90), the rate is cut whatever the error did, so cut k of K falls at the
        latest after epoch epochs - (K - k + 1) * min_epochs (57, 68, 79 of 90) and the
        last rate runs at least min_epochs, even for an error that never falls far
        enough to start counting or never improves after a cut. It holds no cut back: the
        plateau rule cuts whenever the error stops improving, also after epochs 4, 7 and
        10 (Sec. 5 sets no time per rate). `plateau_min_epochs="off"`: no deadline, Sec.
        5's rule alone.
    step: multiply by `lr_factor` at each epoch in `step_epochs`. constant: `lr` throughout.
    `status` says after each epoch what the rule did and what it waits for.
    """

    def __init__(self, config: OptimConfig, global_batch: int, epochs: int = 90):
        super().__init__(name="lr_schedule")
        self.config = config
        self.base = base_lr(config, global_batch)
        self.epochs = epochs
        m = config.plateau_min_epochs
        self.min_epochs = None if m == "off" else m or max(1, epochs // (2 * (config.max_reductions + 1)))
        self.best_error = tf.Variable(float("inf"), trainable=False, name="best_error")
        # epochs count once best_error is at or below this (set by the first epoch and each cut)
        self.counts_below = tf.Variable(float("inf"), trainable=False, name="counts_below")
        self.started = tf.Variable(False, trainable=False, name="started")
        self.bad_epochs = tf.Variable(0, trainable=False, name="bad_epochs")
        self.cooldown = tf.Variable(0, trainable=False, name="cooldown")
        self.reductions = tf.Variable(0, trainable=False, name="reductions")
        self.epochs_done = tf.Variable(0, trainable=False, name="epochs_done")
        self.status = ""  # what the last end_epoch did, for the log

    def lr(self, epoch: int) -> float:
        """The learning rate to use during `epoch` (0-based)."""
        c = self.config
        if c.schedule == "step":
            n = sum(1 for e in c.step_epochs if epoch >= e)
            return self.base * c.lr_factor**n
        if c.schedule == "plateau":
            return self.base * c.lr_factor ** int(self.reductions.numpy())
        return self.base

    def waiting(self) -> bool:
        """True while the error has not yet improved at the current rate (plateau only)."""
        return self.config.schedule == "plateau" and float(self.best_error.numpy()) > float(self.counts_below.numpy())

    def end_epoch(self, eval_error: float) -> bool:
        """Records an epoch's validation error; True when the lr was just reduced."""
        c = self.config
        if c.schedule != "plateau":
            return False
        if not bool(self.started.numpy()):
            self.started.assign(True)
            self.counts_below.assign(eval_error - c.plateau_start_drop)
        improved = eval_error < float(self.best_error.numpy()) - c.plateau_threshold
        if improved:
            self.best_error.assign(eval_error)
            self.bad_epochs.assign(0)
        self.epochs_done.assign_add(1)
        reason = ""
        if int(self.cooldown.numpy()) > 0:
            self.cooldown.assign_sub(1)
            self.status = f"cooldown after a cut ({int(self.cooldown.numpy())} more epoch(s) not counted)"
        elif improved:
            self.status = f"improved to {eval_error:.4f}" + (f"; {self._waiting_reason()}" if self.waiting() else "")
        elif self.waiting():
            self.status = self._waiting_reason()
        else:
            self.bad_epochs.assign_add(1)
            self.status = f"{int(self.bad_epochs.numpy())} of {c.plateau_patience} epochs without improvement"
            if int(self.bad_epochs.numpy()) >= c.plateau_patience:
                reason = "the validation error stopped improving"
        full = int(self.reductions.numpy()) >= c.max_reductions
        deadline = self._deadline()
        if not reason and not full and deadline is not None and deadline <= int(self.epochs_done.numpy()):
            left = c.max_reductions - int(self.reductions.numpy())
            reason = (
                f"the {self.epochs - int(self.epochs_done.numpy())} epochs left hold the {left} cut(s) still to come "
                f"at {self.min_epochs} epochs each (optim.plateau_min_epochs), so it cuts now"
            )
        if reason and not full:
            self._cut()
            self.status = f"{reason}: lr -> {self.lr(0):.3g} (cut {int(self.reductions.numpy())} of {c.max_reductions})"
            return True
        if full:
            self.status += f"; the rate was cut {c.max_reductions} times (Sec. 5) and stays"
        elif deadline is not None:
            self.status += f"; cut at the latest after epoch {deadline}"
        return False

    def _deadline(self) -> int | None:
        """The epoch (1-based) after which the next cut falls at the latest: when the epochs
        left hold the cuts still to come, `min_epochs` each; None without a deadline."""
        if self.min_epochs is None:
            return None
        left = self.config.max_reductions - int(self.reductions.numpy())
        return max(1, self.epochs - left * self.min_epochs)

    def _waiting_reason(self) -> str:
        c = self.config
        if int(self.reductions.numpy()) == 0:
            return (
                f"waiting: the error has not yet fallen {c.plateau_start_drop:g} below the first epoch's "
                f"(needs <= {float(self.counts_below.numpy()):.4f}; a net that has not started learning is "
                "not on a plateau, Sec. 5)"
            )
        return (
            f"waiting: no epoch at this rate has yet improved on the best error "
            f"{float(self.best_error.numpy()):.4f} by more than {c.plateau_threshold:g}"
        )

    def _cut(self) -> None:
        self.reductions.assign_add(1)
        self.bad_epochs.assign(0)
        self.cooldown.assign(self.config.plateau_cooldown)
        # counting resumes once an epoch at the new rate improves on the best so far
        self.counts_below.assign(float(self.best_error.numpy()) - self.config.plateau_threshold)
