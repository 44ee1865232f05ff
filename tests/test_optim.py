"""The paper's update rule and learning-rate schedule (Sec. 5)."""

import numpy as np
import tensorflow as tf

from alexnet_tf import optim
from alexnet_tf.config import OptimConfig


def test_update_rule_matches_hand_computation():
    """v <- 0.9 v - 0.0005 lr w - lr g ; w <- w + v, three steps, with changing grads."""
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)
    w, b = tf.Variable(w0), tf.Variable(b0)
    opt = optim.build_optimizer(cfg, global_batch=128)
    grads = [(rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)) for _ in range(3)]
    vw, vb, ew, eb = np.zeros_like(w0), np.zeros_like(b0), w0.astype(np.float64), b0.astype(np.float64)
    for gw, gb in grads:
        g = optim.add_weight_decay([tf.constant(gw), tf.constant(gb)], [w, b], cfg)
        opt.apply_gradients(zip(g, [w, b]))
        vw = 0.9 * vw - 5e-4 * 0.1 * ew - 0.1 * gw
        ew = ew + vw
        vb = 0.9 * vb - 0.1 * gb  # biases: no decay (decay_biases=False)
        eb = eb + vb
    np.testing.assert_allclose(w.numpy(), ew, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), eb, rtol=1e-5, atol=1e-6)


def test_decay_scale_per_replica():
    cfg = OptimConfig(weight_decay=0.5)
    w = tf.Variable(np.ones((2, 2), np.float32))
    (g,) = optim.add_weight_decay([tf.zeros((2, 2))], [w], cfg, scale=0.25)
    np.testing.assert_allclose(g.numpy(), 0.125)


def test_linear_lr_scaling():
    assert optim.base_lr(OptimConfig(lr=0.01), 256) == 0.02
    assert optim.base_lr(OptimConfig(lr=0.01, scale_lr=False), 256) == 0.01


def test_plateau_schedule_three_reductions():
    s = optim.LearningRateSchedule(OptimConfig(lr=0.01, plateau_patience=2, max_reductions=3), 128)
    errors = [0.9, 0.8, 0.8, 0.8, 0.79995, 0.81, 0.7, 0.7, 0.7] + [0.7] * 10
    reduced = [s.end_epoch(e) for e in errors]
    # improvement at epochs 0, 1, 6; no improvement (within threshold) otherwise.
    assert reduced[:9] == [False, False, False, True, False, True, False, False, True]
    assert sum(reduced) == 3  # never more than three times
    np.testing.assert_allclose(s.lr(len(errors)), 0.01 * 0.1**3)


def test_step_schedule():
    s = optim.LearningRateSchedule(OptimConfig(lr=0.01, schedule="step", step_epochs=(2, 4)), 128)
    np.testing.assert_allclose([s.lr(e) for e in range(6)], [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
