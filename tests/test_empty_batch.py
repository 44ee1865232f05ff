"""A batch of no rows through every form of the net on a CPU, where TensorFlow's oneDNN
Conv2D returns its input for one (TF 2.21): each conv/LRN form eager, in a graph and under
XLA; a replica's empty share of a last, short batch under MirroredStrategy; the columns
placement; the serving form; and each signature of the export."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny

from alexnet_tf import columns
from alexnet_tf.model import build_model
from alexnet_tf.serving_form import serving_data, serving_model

CLASSES = 10  # the quickstart's
LRN_IMPLS = ("ops", "matmul", "tf_op")
# Keras' grouped Conv2D runs only inside XLA on a CPU, where a batch of no rows was never
# the trouble: those forms in the slow tier.
FORMS = [("split", lrn) for lrn in LRN_IMPLS] + [
    pytest.param("grouped", lrn, marks=pytest.mark.slow, id=f"grouped-{lrn}") for lrn in LRN_IMPLS
]
REPLICA_FORMS = [
    pytest.param(form, lrn, marks=() if (form, lrn) == ("split", "matmul") else pytest.mark.slow, id=f"{form}-{lrn}")
    for form in ("split", "grouped")
    for lrn in LRN_IMPLS
]


def images(n, seed=0):
    return tf.random.stateless_normal([n, 67, 67, 3], seed=[seed, 1]) * 50


@pytest.mark.parametrize("conv_form,lrn_impl", FORMS)
def test_every_form_takes_an_empty_batch(conv_form, lrn_impl):
    model = build_model(tiny().model, conv_form=conv_form, lrn_impl=lrn_impl)
    if conv_form == "grouped":
        calls = {"xla": tf.function(lambda x: model(x, training=False), jit_compile=True)}
    else:
        calls = {
            "eager": lambda x: model(x, training=False),
            "graph": tf.function(lambda x: model(x, training=False)),
            "training": tf.function(lambda x: model(x, training=True)),  # dropout's masks too
        }
    for how, call in calls.items():
        out = call(images(0))
        assert out.shape == (0, CLASSES) and out.dtype == tf.float32, how
        assert call(images(2)).shape == (2, CLASSES), how


def test_gradient_of_an_empty_batch_is_zero():
    """A replica with no rows in a training step: every weight's gradient there is zero
    (in a graph, as training runs it without XLA)."""
    model = build_model(tiny().model, conv_form="split")

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    for g in grads(images(0)):
        assert g is not None and not np.any(g.numpy())
    assert all(np.any(g.numpy()) for g in grads(images(2)))


@pytest.mark.parametrize("conv_form,lrn_impl", REPLICA_FORMS)
def test_a_replicas_empty_share_of_the_last_batch(conv_form, lrn_impl):
    """5 images in global batches of 4 on two replicas: the last batch gives replica 0 one
    image and replica 1 none. Every image's logits are those of one call on all five."""
    model = build_model(tiny().model, conv_form=conv_form, lrn_impl=lrn_impl)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = images(5, seed=3)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(4))
    step = tf.function(lambda b: model(b, training=False), jit_compile=conv_form == "grouped")
    rows, shares = [], []
    for batch in dataset:
        out = strategy.run(step, (batch,))
        # replica by replica on the host: a gather would be a collective, whose instance keys
        # later strategies in this process would reuse
        local = [t.numpy() for t in strategy.experimental_local_results(out)]
        shares.append([len(t) for t in local])
        rows += local
    assert shares == [[2, 2], [1, 0]]
    whole = step(x).numpy()
    np.testing.assert_allclose(np.concatenate(rows), whole, rtol=1e-4, atol=1e-4)


def test_columns_placement_takes_an_empty_batch():
    model = build_model(tiny().model)
    forward = tf.function(lambda x: columns.forward(model, x, ["/cpu:0", "/cpu:1"]))
    assert forward(images(0)).shape == (0, CLASSES)
    np.testing.assert_allclose(forward(images(2)).numpy(), model(images(2)).numpy(), rtol=1e-4, atol=1e-4)


def test_serving_form_takes_an_empty_batch():
    config = tiny()
    serving = serving_model(build_model(config.model), serving_data(config.data))
    for call in (serving, tf.function(serving)):
        assert call(tf.zeros([0, 67, 67, 3])).shape == (0, CLASSES)


def test_every_signature_of_the_export_takes_no_instances(export_dir):
    loaded = tf.saved_model.load(export_dir)
    answers = {
        "serving_default": loaded.signatures["serving_default"](images=tf.zeros([0], tf.string)),
        "serve_uint8": loaded.signatures["serve_uint8"](images=tf.zeros([0, 80, 90, 3], tf.uint8)),
        "classification": loaded.signatures["classification"](inputs=tf.zeros([0], tf.string)),
    }
    for name, outputs in answers.items():
        for key, value in outputs.items():
            assert value.shape[0] == 0, (name, key, value.shape)
