"""`TrainedNet.predict_images` takes what users pass: uint8 or float 0..255 pixels, one
image or a batch, images of different sizes, encoded bytes, file paths; refuses anything
else (floats in 0..1 among them) with a ValueError that says what is expected; and runs
the net batch by batch, so that memory does not grow with the number of images."""

import io

import numpy as np
import pytest
import tensorflow as tf
from helpers import net_in_memory
from PIL import Image

from alexnet_tf.nets import TrainedNet


@pytest.fixture(scope="module")
def net():
    return net_in_memory()


def reference(net, image):
    """The net's probabilities for one uint8 image (H, W, 3), prepared here with Pillow
    and NumPy: shorter side to the resize size, the central square, the centre crop, the
    mean subtracted, the input scale."""
    d = net.config.data
    h, w = image.shape[:2]
    scale = d.resize_size / min(h, w)
    size = (max(d.resize_size, round(w * scale)), max(d.resize_size, round(h * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32)
    top, left = (resized.shape[0] - d.resize_size) // 2, (resized.shape[1] - d.resize_size) // 2
    square = resized[top : top + d.resize_size, left : left + d.resize_size]
    m, c = (d.resize_size - d.crop_size) // 2, d.crop_size
    x = ((square - net.stats.mean_image) * d.input_scale)[m : m + c, m : m + c]
    return tf.nn.softmax(net.model(x[None], training=False)).numpy()[0]


def png(image):
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def test_pixels_in_every_form_give_the_same_answer(net, tmp_path):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (4, 76, 76, 3), dtype=np.uint8)  # at the resize size: nothing resized
    expected = net.predict_images(batch)
    assert expected.shape == (4, 10)
    np.testing.assert_allclose(expected[1], reference(net, batch[1]), rtol=1e-4, atol=1e-6)
    for same in (batch.astype(np.float32), batch.astype(np.float64), batch.astype(np.int64), list(batch), tuple(batch)):
        np.testing.assert_allclose(net.predict_images(same), expected, rtol=1e-5, atol=1e-6)
    one = net.predict_images(batch[2])  # one image (H, W, 3): one row
    assert one.shape == (1, 10)
    np.testing.assert_allclose(one[0], expected[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.predict_images(tf.constant(batch)), expected, rtol=1e-5, atol=1e-6)
    # encoded bytes (lossless PNG), file paths and PIL images, alone or in a list, mixed with arrays
    path = tmp_path / "image.png"
    path.write_bytes(png(batch[3]))
    np.testing.assert_allclose(net.predict_images(png(batch[0]))[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.predict_images(str(path))[0], expected[3], rtol=1e-5, atol=1e-6)
    mixed = net.predict_images([png(batch[0]), batch[1], path, str(path), Image.fromarray(batch[2])])
    np.testing.assert_allclose(mixed, expected[[0, 1, 3, 3, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.predict_images(Image.fromarray(batch[1]))[0], expected[1], rtol=1e-5, atol=1e-6)


def test_images_of_different_sizes_in_one_list(net):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((50, 90, 3), (120, 80, 3), (76, 76, 3))]
    probs = net.predict_images(images, batch_size=2)
    assert probs.shape == (3, 10)
    for image, row in zip(images, probs):
        np.testing.assert_allclose(row, reference(net, image), rtol=2e-2, atol=2e-3)  # Pillow's and TF's bilinear
        np.testing.assert_allclose(row, net.predict_images(image)[0], rtol=1e-5, atol=1e-6)
    ten = net.predict_images(images, crops="ten", output="logits")
    assert ten.shape == (30, 10)
    feats = net.predict_images(iter(images), output="features")
    assert feats.shape == (3, net.model.get_layer("fc7").units)
    assert net.predict_images([]).shape == (0, 10)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((2, 40, 40, 3), 0.5, np.float32), r"floats in 0\.\.1 .*multiply by 255"),
        (np.full((40, 40, 3), 0.9), r"floats in 0\.\.1"),
        ([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 0.2)], r"images\[1\] holds floats in 0\.\.1"),
        (np.zeros((2, 40, 40, 4), np.uint8), r"shape \(2, 40, 40, 4\): expected RGB pixels 0\.\.255"),
        (np.zeros((40, 40), np.uint8), r"shape \(40, 40\): expected"),
        (np.zeros((2, 1, 40, 40, 3), np.uint8), r"shape \(2, 1, 40, 40, 3\): expected"),
        (np.full((2, 40, 40, 3), 300.0), r"values from 300.0 to 300.0: expected RGB pixels 0\.\.255"),
        (np.full((2, 40, 40, 3), -1), r"values from -1 to -1"),
        (np.full((2, 40, 40, 3), np.nan), r"values from nan"),
        (np.zeros((2, 40, 40, 3), bool), r"dtype bool: expected"),
        (7, r"images of type int: expected"),
        ([b"not an image"], r"images\[0\]: 12 bytes that are no JPEG, PNG, GIF or BMP"),
        ([{"a": 1}], r"images\[0\] is a dict: expected"),
    ],
)
def test_anything_else_is_a_value_error_that_says_what_is_expected(net, images, message):
    with pytest.raises(ValueError, match=message):
        net.predict_images(images)


def test_images_go_through_the_net_in_batches(net, monkeypatch):
    """batch_size images per model call, and an iterable is read as the calls go: at most
    one batch of images is held, whatever their number (the outputs excepted)."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 60, 60, 3), dtype=np.uint8)
    expected = net.predict_images(images)
    calls, pulled = [], []
    original = TrainedNet.predict_raw

    def counting(self, batch, *args, **kwargs):
        calls.append((int(batch.shape[0]), len(pulled)))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(TrainedNet, "predict_raw", counting)

    def stream():
        for image in images:
            pulled.append(1)
            yield image

    np.testing.assert_allclose(net.predict_images(stream(), batch_size=4), expected, rtol=1e-5, atol=1e-6)
    assert calls == [(4, 4), (4, 8), (2, 10)]  # each call made once its batch was read, no sooner
    calls.clear()
    np.testing.assert_allclose(net.predict_images(images, batch_size=3), expected, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in calls] == [3, 3, 3, 1]
    calls.clear()
    ten = net.predict_images(images, crops="ten", batch_size=4)
    assert [n for n, _ in calls] == [4, 4, 2] and ten.shape == (10, 10)
    with pytest.raises(ValueError, match="batch_size must be 1 or more"):
        net.predict_images(images, batch_size=0)
