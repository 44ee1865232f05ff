"""The metrics that training, its evaluation and `evaluate` share: weighted top-1 and
top-5 hits of a batch, their sums over batches, and the error rates of the sums."""

from __future__ import annotations

import tensorflow as tf

# What one host call of the training loop sums over its steps.
TRAIN_METRICS = ("loss", "top1_correct", "top5_correct", "count")


def correct(labels: tf.Tensor, scores: tf.Tensor, weight: tf.Tensor) -> dict:
    """Weighted counts of top-1 and top-5 hits (top-k with k = min(5, classes))."""
    k = min(5, scores.shape[-1])
    return {
        "top1_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, 1), tf.float32) * weight),
        "top5_correct": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, scores, k), tf.float32) * weight),
    }


def accumulate(batches, eval_step, progress=None) -> dict:
    """The sums of `eval_step(batch)` over `batches`, as floats; `progress(count)` after
    each batch."""
    totals = {}
    for batch in batches:
        for k, v in eval_step(batch).items():
            totals[k] = totals.get(k, 0.0) + float(v)
        if progress:
            progress(int(totals["count"]))
    return totals or {"count": 0.0}


def errors(totals: dict) -> dict:
    """top1_error, top5_error (and the mean loss, where `loss_sum` is summed) over the
    `count` examples of summed metrics (`accumulate`, or a training epoch's sums)."""
    count = max(totals["count"], 1.0)
    out = {
        "top1_error": 1.0 - totals.get("top1_correct", 0.0) / count,
        "top5_error": 1.0 - totals.get("top5_correct", 0.0) / count,
        "examples": int(totals["count"]),
    }
    if "loss_sum" in totals:
        out["loss"] = totals["loss_sum"] / count
    return out


class EpochSums(tf.Module):
    """The running sums of the epoch in progress (float64 variables, so a checkpoint
    holds them): summed loss over steps, weighted top-1/top-5 hits, examples, steps."""

    KEYS = (*TRAIN_METRICS, "steps")

    def __init__(self):
        super().__init__(name="epoch_sums")
        self.sums = {k: tf.Variable(0.0, dtype=tf.float64, trainable=False, name=k) for k in self.KEYS}

    def reset(self) -> None:
        for v in self.sums.values():
            v.assign(0.0)

    def add(self, totals: dict, steps: int) -> None:
        for k in TRAIN_METRICS:
            self.sums[k].assign_add(totals[k])
        self.sums["steps"].assign_add(steps)

    def values(self) -> dict:
        """The epoch's mean training loss and its top-1/top-5 error (`errors`)."""
        s = {k: float(v.numpy()) for k, v in self.sums.items()}
        return {"loss": s["loss"] / max(s["steps"], 1), **errors(s)}
