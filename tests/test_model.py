"""Model tier: parameter count, shapes, connectivity, LRN, forms, serialization, init."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.config import ModelConfig
from alexnet_tf.model import LocalResponseNormalization, build_model, to_split_form

SMALL = ModelConfig(input_size=67, width=0.25, num_classes=10)


@pytest.fixture(scope="module")
def paper_model():
    return build_model(ModelConfig())


def test_paper_parameter_count(paper_model):
    assert paper_model.count_params() == 60_965_224  # Sec. 3.5 net with two groups


def test_paper_layer_shapes(paper_model):
    expected = {
        "conv1": (55, 55, 96),
        "pool1": (27, 27, 96),
        "conv2": (27, 27, 256),
        "pool2": (13, 13, 256),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 384),
        "conv5": (13, 13, 256),
        "pool5": (6, 6, 256),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    }
    for name, shape in expected.items():
        assert tuple(paper_model.get_layer(name).output.shape[1:]) == shape, name
    assert paper_model.output.dtype == "float32"


def test_groups_and_kernel_shapes(paper_model):
    # conv2, conv4, conv5 see one column (half the input maps); conv3 sees both.
    assert paper_model.get_layer("conv2").kernel.shape == (5, 5, 48, 256)
    assert paper_model.get_layer("conv3").kernel.shape == (3, 3, 256, 384)
    assert paper_model.get_layer("conv4").kernel.shape == (3, 3, 192, 384)
    assert paper_model.get_layer("conv5").kernel.shape == (3, 3, 192, 256)


@pytest.mark.parametrize("form", ["grouped", "split"])
@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5", "lrn1", "lrn2"])
def test_column_isolation(form, layer):
    """Changing column A's input maps of a grouped layer (or of an LRN within columns, the
    default model.lrn_scope) leaves column B's outputs alone."""
    model = build_model(SMALL, conv_form=form)
    target = model.get_layer(layer)
    sub = keras.Model(target.input, target.output)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *target.input.shape[1:])).astype("float32")
    cin, cout = x.shape[-1] // 2, target.output.shape[-1] // 2
    y = sub(x).numpy()
    x2 = x.copy()
    x2[..., :cin] = rng.normal(size=x2[..., :cin].shape)  # column A's input maps
    y2 = sub(x2).numpy()
    np.testing.assert_array_equal(y[..., cout:], y2[..., cout:])  # column B unchanged
    assert not np.allclose(y[..., :cout], y2[..., :cout])  # column A did change
    x3 = x.copy()
    x3[..., cin:] = rng.normal(size=x3[..., cin:].shape)
    np.testing.assert_array_equal(y[..., :cout], sub(x3).numpy()[..., :cout])


def test_lrn_scope_layer_spans_both_columns():
    """model.lrn_scope="layer" (Caffe's): column B's maps at the edge see column A's."""
    model = build_model(dataclasses.replace(SMALL, lrn_scope="layer"))
    lrn = model.get_layer("lrn1")
    assert lrn.groups == 1 and build_model(SMALL).get_layer("lrn1").groups == 2
    x = np.random.default_rng(0).normal(scale=100.0, size=(1, 3, 3, lrn.input.shape[-1])).astype("float32")
    x2 = x.copy()
    half = x.shape[-1] // 2
    x2[..., :half] *= 2.0
    changed = np.abs(lrn(x2).numpy() - lrn(x).numpy())[..., half:].max(axis=(0, 1, 2))
    assert (changed[:2] > 0).all() and (changed[2:] == 0).all()  # n // 2 = 2 maps past the edge


def test_lrn_scope_of_the_recipes_and_of_older_runs(tmp_path):
    """The paper's recipe normalizes within each column (its reason beside the setting),
    Caffe's imported net over the layer, and a run's config.json from before the setting
    existed as it was trained: over the layer."""
    import json

    from alexnet_tf.caffe import caffe_config
    from alexnet_tf.config import load_json, load_recipe, to_dict

    assert load_recipe("paper").model.lrn_scope == "column"
    assert caffe_config().model.lrn_scope == "layer"
    old = to_dict(load_recipe("quickstart"))
    del old["model"]["lrn_scope"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_json(str(tmp_path / "config.json")).model.lrn_scope == "layer"


def test_conv3_sees_both_columns():
    model = build_model(SMALL)
    conv3 = model.get_layer("conv3")
    sub = keras.Model(conv3.input, conv3.output)
    x = np.random.default_rng(0).normal(size=(1, *conv3.input.shape[1:])).astype("float32")
    x2 = x.copy()
    x2[..., : x.shape[-1] // 2] += 1.0
    half = conv3.output.shape[-1] // 2
    assert not np.allclose(sub(x).numpy()[..., half:], sub(x2).numpy()[..., half:])


def _lrn_numpy(a, size, alpha, beta, k, per_term):
    c = a.shape[-1]
    out = np.empty_like(a)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c - 1, i + size // 2)
        s = (a[..., lo : hi + 1] ** 2).sum(-1)
        out[..., i] = a[..., i] / (k + (alpha / size if per_term else alpha) * s) ** beta
    return out


@pytest.mark.parametrize("implementation", LocalResponseNormalization.IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "convention,k,per_term", [("paper", 2.0, False), ("cuda-convnet", 2.0, True), ("caffe", 1.0, True)]
)
def test_lrn_matches_formula(convention, k, per_term, implementation):
    rng = np.random.default_rng(1)
    a = rng.normal(scale=30.0, size=(2, 4, 4, 11)).astype("float32")
    layer = LocalResponseNormalization(5, 1e-4, 0.75, convention, implementation)
    expected = _lrn_numpy(a.astype(np.float64), 5, 1e-4, 0.75, k, per_term)
    np.testing.assert_allclose(layer(a).numpy(), expected, rtol=1e-5)
    # a beta other than Sec. 3.3's takes the general power
    other = LocalResponseNormalization(3, 1e-2, 0.6, convention, implementation)
    expected = _lrn_numpy(a.astype(np.float64), 3, 1e-2, 0.6, k, per_term)
    np.testing.assert_allclose(other(a).numpy(), expected, rtol=1e-5)


def _lrn_columns_numpy(a, groups, *args):
    """Each group of consecutive maps normalized on its own (Sec. 3.2's columns)."""
    return np.concatenate([_lrn_numpy(part, *args) for part in np.split(a, groups, axis=-1)], -1)


@pytest.mark.parametrize("implementation", LocalResponseNormalization.IMPLEMENTATIONS)
@pytest.mark.parametrize("convention,k,per_term", [("paper", 2.0, False), ("caffe", 1.0, True)])
def test_lrn_within_columns_matches_formula(convention, k, per_term, implementation):
    """groups=2: each column's maps over its own window, which stops at the column's edge
    (cuda-convnet's rnorm1a over conv1a's maps), in float64 NumPy; maps beside the edge
    differ from the layer-wide LRN, the others do not."""
    rng = np.random.default_rng(4)
    a = rng.normal(scale=100.0, size=(2, 3, 3, 12)).astype("float32")  # alpha * a^2 about k
    layer = LocalResponseNormalization(5, 1e-4, 0.75, convention, implementation, groups=2)
    expected = _lrn_columns_numpy(a.astype(np.float64), 2, 5, 1e-4, 0.75, k, per_term)
    out = layer(a).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    whole = _lrn_numpy(a.astype(np.float64), 5, 1e-4, 0.75, k, per_term)
    edge = [4, 5, 6, 7]  # within n // 2 = 2 maps of the edge between maps 5 and 6
    assert np.abs(out[..., edge] / whole[..., edge] - 1).max() > 0.1
    inner = [0, 1, 2, 3, 8, 9, 10, 11]
    np.testing.assert_allclose(out[..., inner], whole[..., inner], rtol=1e-5)
    empty = layer(np.zeros((0, 3, 3, 12), "float32"))
    assert empty.shape == (0, 3, 3, 12)


@pytest.mark.parametrize("implementation", LocalResponseNormalization.IMPLEMENTATIONS)
@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_gradient_matches_formula(implementation, groups):
    """d(sum(w * LRN(a)))/da of each implementation against central differences of the
    NumPy formula (float64), over the layer and within two columns."""
    rng = np.random.default_rng(5)
    a = rng.normal(scale=30.0, size=(1, 2, 2, 8))
    w = rng.normal(size=a.shape)
    x = tf.constant(a, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(LocalResponseNormalization(implementation=implementation, groups=groups)(x) * w)
    grad = tape.gradient(y, x).numpy()
    eps, expected = 1e-3, np.zeros_like(a)
    for i in np.ndindex(a.shape):
        hi, lo = a.copy(), a.copy()
        hi[i] += eps
        lo[i] -= eps
        f = lambda z: (_lrn_columns_numpy(z, groups, 5, 1e-4, 0.75, 2.0, False) * w).sum()  # noqa: E731
        expected[i] = (f(hi) - f(lo)) / (2 * eps)
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-5)


def test_lrn_paper_convention_equals_tf_op():
    a = np.random.default_rng(2).normal(scale=20.0, size=(1, 3, 3, 16)).astype("float32")
    ours = LocalResponseNormalization(convention="paper")(a).numpy()
    theirs = tf.nn.local_response_normalization(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("implementation", LocalResponseNormalization.IMPLEMENTATIONS)
def test_lrn_float32_inside_bf16_and_compiles_under_xla(implementation):
    layer = LocalResponseNormalization(implementation=implementation, dtype="mixed_bfloat16")
    a = tf.random.normal((2, 5, 5, 8), stddev=10.0)
    fn = tf.function(lambda x: layer(tf.cast(x, tf.bfloat16)), jit_compile=True)
    out = fn(a)
    assert out.dtype == tf.bfloat16
    ref = _lrn_numpy(a.numpy().astype(np.float64), 5, 1e-4, 0.75, 2.0, False)
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), ref, rtol=2e-2, atol=2e-2)


def test_grouped_and_split_forms_agree():
    model = build_model(SMALL, conv_form="grouped")
    split = to_split_form(model, SMALL)
    assert split.get_layer("conv2").__class__.__name__ == "SplitConv2D"
    x = np.random.default_rng(3).normal(scale=50.0, size=(3, 67, 67, 3)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), split(x).numpy(), rtol=1e-4, atol=1e-5)


# (conv_form, lrn_impl, update_op): the GPU table's forms first, then the CPU's and a mix
FORMS = [("grouped", "ops", "keras"), ("split", "matmul", "fused"), ("split", "tf_op", "keras")]


def _one_sgd_step(conv_form, lrn_impl, update_op, x, labels):
    """Logits, then the weights after one step of Sec. 5's SGD, of the net in these forms
    (the same initial weights: each layer's draw depends on the seed and its name only)."""
    from alexnet_tf import optim
    from alexnet_tf.config import OptimConfig

    model = build_model(SMALL, seed=3, conv_form=conv_form, lrn_impl=lrn_impl)
    cfg = OptimConfig()
    opt = optim.build_optimizer(cfg, len(x), update_op)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        logits = model(x, training=False)  # no dropout: the same function in every form
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = optim.add_weight_decay(tape.gradient(loss, variables), variables, cfg)
    before = [v.numpy() for v in variables]
    opt.apply_gradients(zip(grads, variables))
    return logits.numpy(), before, [v.numpy() for v in variables]


def test_forms_agree_on_outputs_and_one_sgd_step():
    """Every form alexnet_tf.forms picks computes the same net and the same update."""
    rng = np.random.default_rng(6)
    x = rng.normal(scale=2.0, size=(4, 67, 67, 3)).astype("float32")
    labels = rng.integers(0, 10, 4)
    (ref_logits, ref_before, ref_after), *others = [_one_sgd_step(*f, x, labels) for f in FORMS]
    assert any(not np.allclose(a, b) for a, b in zip(ref_before, ref_after))  # the step moved the weights
    for logits, before, after in others:
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        for a, b in zip(before, ref_before):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(after, ref_after):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_config_round_trip():
    model = build_model(SMALL)
    clone = keras.Model.from_config(model.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    lrn = clone.get_layer("lrn1")
    assert isinstance(lrn, LocalResponseNormalization)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.convention) == (5, 1e-4, 0.75, "paper")


@pytest.mark.parametrize("form", ["grouped", "split"])
def test_keras_file_round_trip(tmp_path, form):
    cfg = dataclasses.replace(SMALL, lrn_convention="caffe")
    model = build_model(cfg, conv_form=form)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(4).normal(size=(2, 67, 67, 3)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), loaded(x).numpy(), rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("lrn2").convention == "caffe"


WEIGHTED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def test_init_statistics(paper_model):
    # Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
    for name in WEIGHTED:
        layer = paper_model.get_layer(name)
        w = layer.kernel.numpy()
        assert abs(w.std() - 0.01) < 0.0005, name
        assert abs(w.mean()) < 0.0005, name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        np.testing.assert_array_equal(layer.bias.numpy(), expected_bias)


def test_every_layer_draws_its_own_weights(paper_model):
    """Sec. 5 draws each weight independently: no layer's kernel repeats another's draw
    (a shared initializer gives every layer a prefix of one draw: correlation 1)."""
    kernels = {n: paper_model.get_layer(n).kernel.numpy().ravel() for n in WEIGHTED}
    for i, a in enumerate(WEIGHTED):
        for b in WEIGHTED[i + 1 :]:
            n = min(kernels[a].size, kernels[b].size)  # at least conv1's 34,848: noise ~0.005
            r = np.corrcoef(kernels[a][:n], kernels[b][:n])[0, 1]
            assert abs(r) < 0.03, (a, b, r)
            # nor a draw shifted by a few values
            assert abs(np.corrcoef(kernels[a][1:n], kernels[b][: n - 1])[0, 1]) < 0.03, (a, b)


def test_init_depends_on_the_seed_alone():
    def kernels(model):
        return {n: model.get_layer(n).kernel.numpy() for n in WEIGHTED}

    a = kernels(build_model(SMALL, seed=1))
    keras.utils.set_random_seed(123)  # the global seed plays no part
    b = kernels(build_model(SMALL, seed=1))
    split = kernels(build_model(SMALL, seed=1, conv_form="split"))
    other = kernels(build_model(SMALL, seed=2))
    no_lrn = kernels(build_model(dataclasses.replace(SMALL, lrn=False), seed=1))
    for n in WEIGHTED:
        np.testing.assert_array_equal(a[n], b[n])
        np.testing.assert_array_equal(a[n], split[n])  # both model forms
        np.testing.assert_array_equal(a[n], no_lrn[n])  # another layer's presence changes nothing
        assert abs(np.corrcoef(a[n].ravel(), other[n].ravel())[0, 1]) < 0.05, n


def test_init_is_the_same_under_mirrored_strategy():
    """Variables made under MirroredStrategy hold the one-device draw on every replica."""
    one = build_model(SMALL, seed=5)
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        two = build_model(SMALL, seed=5)
    for n in WEIGHTED:
        values = two.get_layer(n).kernel.value.values  # the MirroredVariable's per-replica copies
        assert len(values) == 2
        for v in values:
            np.testing.assert_array_equal(v.numpy(), one.get_layer(n).kernel.numpy())


@pytest.mark.parametrize("placement", ["outputs", "inputs"])
def test_dropout_placement(placement):
    """Sec. 4.2: dropout zeroes the outputs of fc6 and fc7 ("outputs"); torchvision's
    placement drops their inputs (pool5's output and fc6's)."""
    model = build_model(dataclasses.replace(SMALL, dropout_placement=placement))
    get = model.get_layer
    if placement == "outputs":
        assert get("dropout6").input is get("fc6").output
        assert get("fc7").input is get("dropout6").output
        assert get("dropout7").input is get("fc7").output
        assert get("fc8").input is get("dropout7").output
    else:
        assert get("dropout6").input is get("flatten").output
        assert get("fc6").input is get("dropout6").output
        assert get("dropout7").input is get("fc6").output
        assert get("fc8").input is get("fc7").output


@pytest.mark.parametrize("form, kept_factor, test_factor", [("paper", 1.0, 0.5), ("inverted", 2.0, 1.0)])
def test_dropout_forms(form, kept_factor, test_factor):
    """Sec. 4.2 ("paper"): in training each output of fc6/fc7 is zero or passes as it is;
    at test every output is kept and multiplied by 0.5. "inverted": the kept ones are
    doubled in training, test passes them unchanged."""
    model = build_model(dataclasses.replace(SMALL, dropout_form=form))
    get = model.get_layer
    sub = keras.Model(model.input, [get("dropout7").input, get("dropout7").output])
    x = np.random.default_rng(0).normal(scale=50.0, size=(16, 67, 67, 3)).astype("float32")
    before, after = (t.numpy() for t in sub(x, training=True))
    live = before != 0
    dropped = (after == 0) & live
    assert live.sum() > 1000 and 0.45 < dropped.sum() / live.sum() < 0.55  # p = 0.5
    np.testing.assert_allclose(after[live & ~dropped], kept_factor * before[live & ~dropped], rtol=1e-6)
    before, after = (t.numpy() for t in sub(x, training=False))
    np.testing.assert_allclose(after, test_factor * before, rtol=1e-6)


@pytest.mark.parametrize("form", ["paper", "inverted"])
def test_dropout_sgd_step_matches_hand_computation(form):
    """One SGD step of h = drop(relu(x W1)), y = h W2, loss = mean((y - t)^2) / 2, with
    the mask the layer drew, against the gradient written out by hand in NumPy."""
    from alexnet_tf.model import Dropout

    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    w1, w2 = rng.normal(size=(5, 16)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(16, "relu", use_bias=False, name="h")(inputs)
    dropout = Dropout(0.5, form, seed=3)
    outputs = keras.layers.Dense(3, use_bias=False, name="y")(dropout(hidden))
    net = keras.Model(inputs, outputs)
    net.get_layer("h").kernel.assign(w1)
    net.get_layer("y").kernel.assign(w2)
    # The mask of the next call: the same seed state applied to ones.
    state = dropout.seed_generator.state.numpy()
    mask = (dropout(tf.ones((8, 16)), training=True).numpy() != 0).astype("float32")
    dropout.seed_generator.state.assign(state)
    lr = 0.1
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(net(x, training=True) - t)) / 2
    grads = tape.gradient(loss, net.trainable_variables)
    keras.optimizers.SGD(lr).apply_gradients(zip(grads, net.trainable_variables))

    scale = 1.0 if form == "paper" else 2.0  # Sec. 4.2 passes kept units as they are
    a = x @ w1
    h = np.maximum(a, 0) * mask * scale
    dy = (h @ w2 - t) / t.size
    g2 = h.T @ dy
    g1 = x.T @ ((dy @ w2.T) * mask * scale * (a > 0))
    np.testing.assert_allclose(net.get_layer("h").kernel.numpy(), w1 - lr * g1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.get_layer("y").kernel.numpy(), w2 - lr * g2, rtol=1e-5, atol=1e-6)


def test_ablation_switches():
    one = build_model(dataclasses.replace(ModelConfig(), two_columns=False))
    # Sec. 3.2 and its footnote: half the kernels in conv1-conv4, conv5 and fc kept.
    assert [one.get_layer(n).filters for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [48, 128, 192, 192, 256]
    assert all(one.get_layer(n).groups == 1 for n in ("conv2", "conv4", "conv5"))
    assert one.get_layer("fc6").units == 4096
    no_lrn = build_model(dataclasses.replace(SMALL, lrn=False))
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in no_lrn.layers)
    pool = build_model(dataclasses.replace(ModelConfig(), overlap_pooling=False)).get_layer("pool1")
    assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
    assert build_model(ModelConfig()).get_layer("pool1").pool_size == (3, 3)
    tanh = build_model(dataclasses.replace(SMALL, activation="tanh"))
    assert tanh.get_layer("conv1").activation.__name__ == "tanh"


def test_width_and_input_size():
    model = build_model(SMALL)
    assert model.get_layer("conv1").filters == 24
    assert model.get_layer("fc6").units == 1024
    assert tuple(model.get_layer("pool5").output.shape[1:3]) == (1, 1)
    assert model.output.shape[-1] == 10


def test_fan_in_init():
    """model.init=fan_in: N(0, 2 / fan-in) per layer, the fan-in of a grouped layer being
    what one of its kernels sees (k * k * input maps / 2)."""
    model = build_model(dataclasses.replace(ModelConfig(), init="fan_in"), seed=3)
    fan_in = {
        "conv1": 11 * 11 * 3,
        "conv2": 5 * 5 * 48,
        "conv3": 3 * 3 * 256,
        "conv4": 3 * 3 * 192,
        "conv5": 3 * 3 * 192,
        "fc6": 6 * 6 * 256,
        "fc7": 4096,
        "fc8": 4096,
    }
    for name, n in fan_in.items():
        w = model.get_layer(name).kernel.numpy()
        assert abs(w.std() / np.sqrt(2 / n) - 1) < 0.02, name
        assert abs(w.mean()) < 0.05 * np.sqrt(2 / n), name
