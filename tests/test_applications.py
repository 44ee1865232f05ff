"""Keras Applications' habits: `preprocess_input` prepares images as evaluation does
(checked against NumPy on images that need no resize, and against `predict_images`
through the Keras model), `decode_predictions` gives (class_name, description, score)
per image, and `AlexNet` takes `classes`, `classifier_activation` and `input_shape` with
Keras' meanings (softmax by default; logits with classifier_activation=None)."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import net_in_memory

import alexnet_tf
from alexnet_tf import caffe


@pytest.fixture(scope="module")
def net():
    return net_in_memory()


def squares(size, n=3, seed=0):
    """uint8 RGB images already size x size: no resize, so NumPy alone says what the
    net must be given."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_preprocess_input_is_the_crop_minus_the_mean_scaled(net):
    d = net.config.data
    images = squares(d.resize_size)
    m, c = (d.resize_size - d.crop_size) // 2, d.crop_size
    expected = ((images.astype(np.float32) - net.stats.mean_image) * d.input_scale)[:, m : m + c, m : m + c]
    x = alexnet_tf.preprocess_input(images, net)
    assert x.dtype == np.float32 and x.shape == (3, c, c, 3)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-5)
    # a list of paths, bytes or arrays, as predict_images takes, gives the same rows
    np.testing.assert_allclose(alexnet_tf.preprocess_input(list(images), net, batch_size=2), x, atol=1e-5)

    ten = alexnet_tf.preprocess_input(images, net, crops="ten")
    assert ten.shape == (30, c, c, 3)
    e = d.resize_size - c  # Sec. 4.1: four corners and the centre, each with its reflection
    top_left = (images[0, :c, :c] - net.stats.mean_image[:c, :c]) * d.input_scale
    np.testing.assert_allclose(ten[0], top_left, atol=1e-5)
    corner = (images[0, e:, e:] - net.stats.mean_image[e:, e:]) * d.input_scale
    np.testing.assert_allclose(ten[7], corner[:, ::-1], atol=1e-5)  # the bottom-right patch, mirrored
    np.testing.assert_allclose(ten[10:20], alexnet_tf.preprocess_input(images[1:2], net, crops="ten"), atol=1e-5)


def test_preprocess_input_imagenet_is_caffes_without_weights():
    """Caffe's bvlc_alexnet: 256x256 warped images, the 227 centre crop, Caffe's mean per
    channel (104, 116.7, 122.7 in BGR), BGR, unscaled: no file needed."""
    images = squares(256, n=2)
    x = alexnet_tf.preprocess_input(images, "imagenet")
    top = (256 - 227) // 2
    expected = images[:, top : top + 227, top : top + 227, ::-1].astype(np.float32) - np.float32([104.0, 116.7, 122.7])
    assert x.shape == (2, 227, 227, 3)
    np.testing.assert_allclose(x, expected, atol=1e-4)
    # a .caffemodel's is the same, its weights not read
    np.testing.assert_array_equal(alexnet_tf.preprocess_input(images, "no/such/bvlc_alexnet.caffemodel"), x)
    # the same from the Config and its stats
    config = caffe.caffe_config()
    np.testing.assert_allclose(
        alexnet_tf.preprocess_input(images, config, stats=caffe.caffe_stats(None, 256)), expected, atol=1e-4
    )
    with pytest.raises(ValueError, match="a Config has no mean image: give stats="):
        alexnet_tf.preprocess_input(images, config)
    with pytest.raises(ValueError, match="floats in 0..1"):
        alexnet_tf.preprocess_input(images / 255.0, "imagenet")
    with pytest.raises(ValueError, match="expected a TrainedNet, 'imagenet'"):
        alexnet_tf.preprocess_input(images, 3)


def test_the_keras_model_on_preprocessed_images_is_predict_images(trained_workdir):
    """What a Keras Applications user writes, on a trained run: the model's softmax on
    `preprocess_input` is `predict_images`; classifier_activation=None gives the logits."""
    net = alexnet_tf.load_net(trained_workdir)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 90), (76, 76), (120, 50))]
    model = alexnet_tf.AlexNet(weights=trained_workdir)
    assert model.layers[-1].name == "predictions"
    probs = model.predict(alexnet_tf.preprocess_input(images, net), verbose=0)
    np.testing.assert_allclose(probs, net.predict_images(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    logits = alexnet_tf.AlexNet(weights=trained_workdir, classifier_activation=None)(
        alexnet_tf.preprocess_input(images, trained_workdir), training=False
    )
    np.testing.assert_allclose(logits, net.predict_images(images, output="logits"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(logits), probs, rtol=1e-5, atol=1e-6)
    batch = rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)  # one array, smaller than the net's resize
    np.testing.assert_allclose(
        model.predict(alexnet_tf.preprocess_input(batch, net), verbose=0), net.predict_images(batch), atol=1e-6
    )
    ten = model.predict(alexnet_tf.preprocess_input(images, net, crops="ten"), verbose=0)
    np.testing.assert_allclose(ten.reshape(3, 10, -1).mean(1), net.predict_images(images, crops="ten"), atol=1e-6)


def test_decode_predictions_imagenet_and_a_run():
    preds = np.full((2, 1000), 1e-4, np.float32)
    preds[0, [0, 281, 999]] = (0.5, 0.3, 0.1)  # tench, tabby cat, toilet tissue
    preds[1, 1] = 0.9
    decoded = alexnet_tf.decode_predictions(preds, top=3)
    assert [name for name, _, _ in decoded[0]] == ["n01440764", "n02123045", "n15075141"]
    assert decoded[0][0] == ("n01440764", "tench, Tinca tinca", pytest.approx(0.5))
    assert decoded[0][1][1].startswith("tabby") and isinstance(decoded[0][2][2], float)
    assert decoded[1][0][:2] == ("n01443537", "goldfish, Carassius auratus") and len(decoded[1]) == 3
    assert len(alexnet_tf.decode_predictions(preds)[0]) == 5  # Keras' default top
    assert alexnet_tf.decode_predictions(preds, net="imagenet") == alexnet_tf.decode_predictions(preds)
    with pytest.raises(ValueError, match="1000 classes, these 10"):
        alexnet_tf.decode_predictions(np.zeros((1, 10)))
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        alexnet_tf.decode_predictions(np.zeros(1000))
    # the class names given, without readable names: each described by its name
    assert alexnet_tf.decode_predictions([[0.2, 0.7, 0.1]], top=2, net=["a", "b", "c"]) == [
        [("b", "b", pytest.approx(0.7)), ("a", "a", pytest.approx(0.2))]
    ]


def test_decode_predictions_with_a_runs_classes(trained_workdir, net):
    run = alexnet_tf.load_net(trained_workdir)
    preds = np.eye(10, dtype=np.float32)[[9, 3]]
    decoded = alexnet_tf.decode_predictions(preds, top=1, net=trained_workdir)  # its classes.json
    assert [row[0][0] for row in decoded] == [run.class_names[9], run.class_names[3]] == ["Ankle boot", "Dress"]
    assert decoded == alexnet_tf.decode_predictions(preds, top=1, net=run)
    assert alexnet_tf.decode_predictions(preds, top=1, net=net)[0] == [("class 9", "class 9", 1.0)]
    with pytest.raises(ValueError, match="predictions have 1000 classes but the net has 10"):
        alexnet_tf.decode_predictions(np.zeros((1, 1000)), net=net)


def test_alexnet_takes_keras_applications_arguments(trained_workdir):
    untrained = alexnet_tf.AlexNet(classes=10, classifier_activation=None)
    assert untrained.output.shape[-1] == 10 and untrained.layers[-1].name == "logits"  # fc8, no softmax
    # 60,965,224 less fc8's 4096 * 990 + 990
    assert untrained.count_params() == 60_965_224 - 4097 * 990
    probs = alexnet_tf.AlexNet(input_shape=(227, 227, 3))(np.zeros((2, 227, 227, 3), np.float32))
    np.testing.assert_allclose(np.sum(probs, 1), 1.0, rtol=1e-5)  # softmax by default, as in Keras
    base = alexnet_tf.AlexNet(weights=trained_workdir, include_top=False, classes=3)  # a top of your own
    assert base.output.shape[-1] == base.get_layer("fc7").units == 1024 and base.layers[-1].name == "fc7"
    assert alexnet_tf.AlexNet(weights=trained_workdir, classes=10).output.shape[-1] == 10
    with pytest.raises(ValueError, match="has 10 classes, so with include_top=True classes must be 10, got 1000"):
        alexnet_tf.AlexNet(weights=trained_workdir, classes=1000)
    with pytest.raises(ValueError, match="classifier_activation must be 'softmax' or None"):
        alexnet_tf.AlexNet(weights=trained_workdir, classifier_activation="relu")
    with pytest.raises(ValueError, match=r"input_shape must be \(67, 67, 3\)"):
        alexnet_tf.AlexNet(weights=trained_workdir, input_shape=(224, 224, 3))
    assert alexnet_tf.AlexNet(classes=4, classifier_activation="sigmoid").layers[-1].get_config()["activation"] == (
        "sigmoid"
    )
