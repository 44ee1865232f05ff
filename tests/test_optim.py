"""The paper's update rule and learning-rate schedule (Sec. 5)."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import optim
from alexnet_tf.config import OptimConfig


@pytest.mark.parametrize("update_op", ["keras", "fused"])
def test_update_rule_matches_hand_computation(update_op):
    """v <- 0.9 v - 0.0005 lr w - lr g ; w <- w + v, three steps, with changing grads,
    with Keras' SGD ops and with the fused kernel (optim.FusedSGD)."""
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)
    w, b = tf.Variable(w0), tf.Variable(b0)
    opt = optim.build_optimizer(cfg, global_batch=128, update_op=update_op)
    assert isinstance(opt, optim.FusedSGD) == (update_op == "fused")
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


def _cuts(errors, epochs=90, **config):
    """The epochs (0-based) after which the plateau schedule cut the rate."""
    s = optim.LearningRateSchedule(OptimConfig(lr=0.01, **config), 128, epochs)
    return [i for i, e in enumerate(errors) if s.end_epoch(e)], s


def test_plateau_schedule_three_reductions():
    errors = [0.9, 0.8, 0.8, 0.8, 0.79995, 0.81, 0.7, 0.7, 0.7] + [0.7] * 10 + [0.6, 0.6, 0.6, 0.5, 0.5, 0.5]
    cuts, s = _cuts(errors, plateau_patience=2, max_reductions=3)
    # Improvements at epochs 1, 6, 19 and 22 (0.79995 is within the 1e-3 threshold).
    # 3: second epoch without improvement. 5: at the cut rate, nothing improved yet, so
    # epochs 4 and 5 do not count; 6 improves; 8: two flat epochs. 19 improves after the
    # third cut, but three is the limit.
    assert cuts == [3, 8, 21]
    np.testing.assert_allclose(s.lr(len(errors)), 0.01 * 0.1**3)


def test_plateau_schedule_waits_for_learning_to_start():
    """Flat at chance, then falling, then flat: the first cut comes two epochs into the
    final flat stretch, not during the initial one (Sec. 5: "stopped improving")."""
    chance = [0.9, 0.9, 0.897, 0.9, 0.899, 0.9, 0.903, 0.9]  # within sampling noise of chance
    falling = [0.85, 0.7, 0.55, 0.5]
    flat = [0.5, 0.5, 0.5]
    cuts, s = _cuts(chance + falling + flat)
    assert cuts == [len(chance) + len(falling) + 1]
    assert s.reductions.numpy() == 1
    # a fall of less than plateau_start_drop is noise, not a start
    cuts, s = _cuts([0.9, 0.885, 0.89, 0.9, 0.9, 0.9], plateau_start_drop=0.02)
    assert cuts == [] and s.waiting()
    # the same fall counts with a smaller start_drop: epochs 2 and 3 without improvement;
    # after that cut nothing improves, so nothing counts
    assert _cuts([0.9, 0.885, 0.89, 0.9, 0.9, 0.9], plateau_start_drop=0.01)[0] == [3]


def test_plateau_schedule_cooldown():
    errors = [0.9, 0.5] + [0.5] * 8
    assert _cuts(errors)[0] == [3]  # after the cut nothing improves: no further cut
    errors = [0.9, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert _cuts(errors)[0] == [3, 6]
    assert _cuts(errors, plateau_cooldown=2)[0] == [3, 7]  # epochs 4 and 5 are not counted


def test_plateau_schedule_state_survives_a_checkpoint(tmp_path):
    errors = [0.9, 0.9, 0.8, 0.7, 0.7, 0.7, 0.65, 0.65, 0.65]
    whole, _ = _cuts(errors)
    first = optim.LearningRateSchedule(OptimConfig(), 128)
    cuts = [i for i, e in enumerate(errors[:5]) if first.end_epoch(e)]
    path = tf.train.Checkpoint(schedule=first).save(str(tmp_path / "ckpt"))
    second = optim.LearningRateSchedule(OptimConfig(), 128)
    tf.train.Checkpoint(schedule=second).restore(path).assert_consumed()
    cuts += [i for i, e in enumerate(errors[5:], 5) if second.end_epoch(e)]
    assert cuts == whole == [5, 8]


def test_step_schedule():
    s = optim.LearningRateSchedule(OptimConfig(lr=0.01, schedule="step", step_epochs=(2, 4)), 128)
    np.testing.assert_allclose([s.lr(e) for e in range(6)], [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


def _statuses(errors, epochs=90, **config):
    s = optim.LearningRateSchedule(OptimConfig(lr=0.01, **config), 128, epochs)
    out = []
    for e in errors:
        cut = s.end_epoch(e)
        out.append((cut, s.status))
    return out, s


def test_plateau_schedule_gets_its_cuts_when_the_error_never_falls_far_enough():
    """0.30, then 0.281 for the rest of 90 epochs: never 0.02 below the first epoch's,
    so no epoch counts; the deadline (each later rate 90 // 8 = 11 epochs at least) still
    makes Sec. 5's three cuts, after epochs 57, 68 and 79, and the log says at every
    epoch that the rule waits, why, and until when."""
    out, s = _statuses([0.30] + [0.281] * 89)
    assert [i + 1 for i, (cut, _) in enumerate(out) if cut] == [57, 68, 79]
    assert s.reductions.numpy() == 3 and np.isclose(s.lr(89), 0.01 * 0.1**3)
    for _, status in out[:56]:
        assert "waiting" in status and "fallen 0.02 below" in status and "at the latest after epoch 57" in status
    assert "the 33 epochs left hold the 3 cut(s) still to come at 11 epochs each" in out[56][1]
    assert "cut 1 of 3" in out[56][1]
    assert all("stays" in status for _, status in out[79:])


def test_plateau_schedule_gets_its_cuts_at_chance():
    cuts, s = _cuts([0.9] * 90)
    assert [c + 1 for c in cuts] == [57, 68, 79]


def test_plateau_schedule_gets_its_cuts_when_nothing_improves_after_a_cut():
    """A fall, a plateau that cuts (epoch 5), then no epoch beats the best by more than
    the threshold: counting never resumes, and the deadline makes the two other cuts."""
    errors = [0.9, 0.7, 0.5, 0.5, 0.5] + [0.5005] * 85
    out, s = _statuses(errors)
    assert [i + 1 for i, (cut, _) in enumerate(out) if cut] == [5, 68, 79]
    assert "stopped improving" in out[4][1] and "epochs left hold the 2 cut(s)" in out[67][1]
    assert all("waiting: no epoch at this rate has yet improved" in st for _, st in out[5:67])


def test_plateau_schedule_deadline_follows_the_budget():
    """The plateau rule cuts first where it can; the deadline only where it did not."""
    assert [c + 1 for c in _cuts([0.9] * 10, epochs=10)[0]] == [7, 8, 9]  # 10 // 8 = 1 epoch a rate
    assert [c + 1 for c in _cuts([0.9] * 90, plateau_min_epochs=5)[0]] == [75, 80, 85]
    # the quickstart's one cut in 10 epochs: at a plateau, else after epoch 8
    falling = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.38, 0.36, 0.35]
    assert [c + 1 for c in _cuts(falling, epochs=10, max_reductions=1)[0]] == [8]
    plateau = [0.9, 0.6, 0.5, 0.5, 0.5, 0.45, 0.4, 0.4, 0.4, 0.4]
    assert [c + 1 for c in _cuts(plateau, epochs=10, max_reductions=1)[0]] == [5]


@pytest.mark.parametrize("deadline", [0, "off"])
def test_plateau_cuts_need_no_time_at_a_rate(deadline):
    """Sec. 5 cuts when the error stops improving at the current rate, however soon: three
    plateaus cut after epochs 4, 7 and 10 of 90, with the deadline (it holds no cut back)
    and without it."""
    errors = [0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6] + [0.6] * 80
    cuts, s = _cuts(errors, plateau_min_epochs=deadline)
    assert [c + 1 for c in cuts] == [4, 7, 10]
    assert s.reductions.numpy() == 3


def test_plateau_deadline_off_is_sec5_alone():
    """optim.plateau_min_epochs="off": no cut but at a plateau. An error at chance for 90
    epochs is never cut (the deadline would cut after epochs 57, 68, 79; a deadline of one
    epoch a rate after 87, 88, 89), and the log names no deadline."""
    out, s = _statuses([0.9] * 90, plateau_min_epochs="off")
    assert not any(cut for cut, _ in out) and s.reductions.numpy() == 0
    assert all("waiting" in status and "at the latest" not in status for _, status in out)
    assert [c + 1 for c in _cuts([0.9] * 90, plateau_min_epochs=1)[0]] == [87, 88, 89]
    # a plateau still cuts, as Sec. 5 says; after it nothing improves: no further cut
    out, s = _statuses([0.9, 0.7, 0.5, 0.5, 0.5] + [0.5005] * 85, plateau_min_epochs="off")
    assert [i + 1 for i, (cut, _) in enumerate(out) if cut] == [5]
    assert "stopped improving" in out[4][1]


def test_plateau_deadline_setting():
    """`--set optim.plateau_min_epochs=off` as the command line gives it; 0 is the default
    deadline; a negative number is refused in one line."""
    from alexnet_tf.config import Config, ConfigError, override, validate

    assert override(Config(), ["optim.plateau_min_epochs=off"]).optim.plateau_min_epochs == "off"
    assert override(Config(), ["optim.plateau_min_epochs=3"]).optim.plateau_min_epochs == 3
    assert Config().optim.plateau_min_epochs == 0
    with pytest.raises(ConfigError, match="must not be negative"):
        validate(override(Config(), ["optim.plateau_min_epochs=-1"]))
    with pytest.raises(ConfigError, match="off"):
        override(Config(), ["optim.plateau_min_epochs=never"])
