"""Data tier: each op eager and inside tf.data, crop geometry, colour noise, mean
subtraction, every source kind, sharding, resume, and the bad-file zoo."""

import dataclasses
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import data as data_lib
from alexnet_tf.config import DataConfig

R, C = 32, 27  # small stand-ins for 256 and 227; the geometry is the same
CFG = DataConfig(resize_size=R, crop_size=C, shuffle_buffer=1000)


def jpeg_bytes(array, mode="RGB", fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, fmt, quality=95)
    return buf.getvalue()


def random_image(rng, h, w):
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def make_folder(root, per_class=5, classes=("cat", "dog", "eel"), size=(40, 52), seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(per_class):
                with open(os.path.join(root, split, c, f"{c}_{i}.JPEG"), "wb") as f:
                    f.write(jpeg_bytes(random_image(rng, *size)))
    return root


def ramp_image(r=R):
    """Pixel (y, x) = (y, x, y + x): any crop tells where it came from."""
    y, x = np.mgrid[0:r, 0:r]
    return np.stack([y, x, y + x], -1).astype(np.uint8)


# ----------------------------------------------------------------------------- ops
def test_resize_central_eager_and_in_dataset():
    image = tf.constant(np.zeros((40, 80, 3), np.uint8))
    eager = data_lib.resize_central(image, R)
    assert eager.shape == (R, R, 3) and eager.dtype == tf.uint8
    ds = tf.data.Dataset.from_tensors(image).map(lambda x: data_lib.resize_central(x, R))
    assert next(iter(ds)).shape == (R, R, 3)
    # A tiny image (smaller than the crop) is enlarged, not rejected.
    tiny = data_lib.resize_central(tf.constant(np.full((5, 3, 3), 200, np.uint8)), R)
    assert tiny.shape == (R, R, 3) and int(tf.reduce_min(tiny)) == 200


def test_resize_keeps_the_central_square():
    # Left third black, middle white, right third black: the centre crop is all white.
    image = np.zeros((30, 90, 3), np.uint8)
    image[:, 30:60] = 255
    out = data_lib.resize_central(tf.constant(image), 30).numpy()
    assert out.min() == 255


def test_fused_decode_crop_matches_full_decode():
    rng = np.random.default_rng(1)
    data = tf.constant(jpeg_bytes(random_image(rng, R, R)))  # already R x R: the fused path
    offset = tf.constant([3, 4], tf.int32)
    fused = data_lib.decode_crop(data, offset, C, R)
    full = tf.io.decode_jpeg(data, channels=3)[3 : 3 + C, 4 : 4 + C]
    np.testing.assert_array_equal(fused.numpy(), full.numpy())
    # Same inside tf.data, and for a non-square file (decoded, resized, then cropped).
    other = tf.constant(jpeg_bytes(random_image(rng, 40, 50)))
    ds = tf.data.Dataset.from_tensor_slices([data, other]).map(lambda d: data_lib.decode_crop(d, offset, C, R))
    got = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(got[0], full.numpy())
    expected = data_lib.decode_and_resize(other, R, True).numpy()[3 : 3 + C, 4 : 4 + C]
    np.testing.assert_array_equal(got[1], expected)


def test_train_crop_and_flip_geometry():
    image = tf.constant(ramp_image())
    seen_flip = set()
    for i in range(40):
        choices = data_lib.random_choices(tf.constant(i, tf.int64), CFG, training=True, seed=0, epoch=0)
        ex = data_lib.crop_example(image, 3, choices, CFG)
        top, left = ex["offset"].numpy()
        assert 0 <= top <= R - C and 0 <= left <= R - C
        # The crop leaves the host as cut; the device mirrors it when the bit is set.
        np.testing.assert_array_equal(ex["image"].numpy(), ramp_image()[top : top + C, left : left + C])
        seen_flip.add(bool(ex["flip"].numpy()))
        assert ex["label"].dtype == tf.int32 and float(ex["weight"]) == 1.0
    assert seen_flip == {True, False}


def test_random_choices_are_a_pure_function_of_seed_epoch_and_index():
    indices = tf.constant([[3, 70], [1_000_000, 5]], tf.int64)
    offset, flip, alpha = data_lib.random_choices(indices, CFG, True, seed=4, epoch=2)
    assert offset.shape == (2, 2, 2) and flip.shape == (2, 2) and alpha.shape == (2, 2, 3)
    # Drawn for a chunk at once or one example at a time: the same choices.
    for (i, j), index in np.ndenumerate(indices.numpy()):
        o, f, a = data_lib.random_choices(tf.constant(index), CFG, True, seed=4, epoch=2)
        np.testing.assert_array_equal(o, offset[i, j])
        assert bool(f) == bool(flip[i, j])
        np.testing.assert_array_equal(a, alpha[i, j])
    # Another seed or epoch draws again.
    for seed, epoch in ((5, 2), (4, 3)):
        other = data_lib.random_choices(indices, CFG, True, seed=seed, epoch=epoch)[2]
        assert not np.any(np.isclose(other.numpy(), alpha.numpy()))


def test_random_choices_do_not_depend_on_the_batch():
    """An example's crop, flip and colour noise are the same drawn alone or in a batch."""
    indices = tf.range(1000, dtype=tf.int64)
    batch = data_lib.random_choices(indices, CFG, True, seed=3, epoch=1)
    one_by_one = tf.data.Dataset.from_tensor_slices(indices).map(
        lambda i: data_lib.random_choices(i, CFG, True, seed=3, epoch=1)
    )
    alone = next(iter(one_by_one.batch(1000)))
    for a, b in zip(alone, batch):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_random_draws_are_uniform_and_independent():
    u = data_lib.random_draws(tf.range(20000, dtype=tf.int64), seed=0, epoch=0).numpy().astype(np.float64)
    assert u.shape == (20000, data_lib.DRAWS) and 0 < u.min() and u.max() < 1
    # Each column uniform (Kolmogorov-Smirnov distance well under the 0.1% critical 0.0138).
    for k in range(data_lib.DRAWS):
        x = np.sort(u[:, k])
        assert np.max(np.abs(x - (np.arange(1, len(x) + 1) - 0.5) / len(x))) < 0.0138
    # No correlation between the draws of one example, nor between neighbouring examples.
    corr = np.corrcoef(np.concatenate([u[:-1], u[1:]], axis=1).T)
    assert np.all(np.abs(corr[np.triu_indices(2 * data_lib.DRAWS, 1)]) < 0.035)


def test_crop_offsets_cover_every_position():
    offset = data_lib.random_choices(tf.range(6000, dtype=tf.int64), CFG, True)[0].numpy()
    for axis in range(2):
        counts = np.bincount(offset[:, axis], minlength=R - C + 1)
        assert len(counts) == R - C + 1 and counts.min() > 0.6 * counts.mean()


def test_eval_crop_is_central():
    choices = data_lib.random_choices(tf.constant(0, tf.int64), CFG, training=False)
    ex = data_lib.crop_example(tf.constant(ramp_image()), 0, choices, CFG)
    m = (R - C) // 2
    np.testing.assert_array_equal(ex["image"].numpy(), ramp_image()[m : m + C, m : m + C])
    assert not ex["flip"].numpy() and not ex["alpha"].numpy().any()


def test_ten_crops_corners_exactly():
    img = ramp_image()
    out = data_lib.batch.ten_crops(tf.constant(img), CFG, 7)
    m = R - C
    expected = [(0, 0), (0, m), (m, 0), (m, m), (m // 2, m // 2)]
    assert out["image"].shape == (10, C, C, 3)
    for k, (top, left) in enumerate(expected):
        patch = img[top : top + C, left : left + C]
        np.testing.assert_array_equal(out["image"][2 * k].numpy(), patch)
        np.testing.assert_array_equal(out["image"][2 * k + 1].numpy(), patch)  # flipped on the device
        seen = data_lib.apply_flips(out["image"][2 * k : 2 * k + 2], out["flip"][2 * k : 2 * k + 2]).numpy()
        np.testing.assert_array_equal(seen[1], patch[:, ::-1])
        assert tuple(out["offset"][2 * k].numpy()) == (top, left)
        assert list(out["flip"][2 * k : 2 * k + 2].numpy()) == [False, True]
        # The top-left pixel of each corner crop is the corner of the image it names.
        assert tuple(out["image"][2 * k, 0, 0, :2].numpy()) == (top, left)
    assert list(out["label"].numpy()) == [7] * 10


def test_ten_crop_batches_from_a_folder(tmp_path):
    source = data_lib.open_source("folder:" + make_folder(str(tmp_path), per_class=1))
    batches = list(data_lib.eval_dataset(source, CFG, "val", 2, crops="ten").as_numpy_iterator())
    assert [b["image"].shape[0] for b in batches] == [20, 20]  # 3 images: 2 + (1 + 1 padding)
    assert list(batches[1]["weight"]) == [1.0] * 10 + [0.0] * 10
    first = data_lib.decode_and_resize(tf.io.read_file(str(tmp_path / "val/cat/cat_0.JPEG")), R, True).numpy()
    m = R - C
    seen = data_lib.apply_flips(batches[0]["image"], batches[0]["flip"]).numpy()
    np.testing.assert_array_equal(seen[4], first[m:, :C])  # bottom-left, unflipped
    np.testing.assert_array_equal(seen[7], first[m:, m:][:, ::-1])  # bottom-right, flipped


def test_pca_noise_statistics():
    stats = data_lib.Stats.imagenet(R)
    n = 20000
    alpha = tf.random.stateless_normal((n, 3), [1, 2], stddev=0.1)
    batch = {
        "image": tf.zeros((n, 1, 1, 3), tf.uint8),
        "offset": tf.zeros((n, 2), tf.int32),
        "flip": tf.zeros((n,), tf.bool),
        "alpha": alpha,
    }
    cfg = DataConfig(resize_size=R, crop_size=1, subtract_mean=False)
    tensors = stats.tensors()
    shift = data_lib.device_preprocess(batch, tensors, cfg).numpy().reshape(n, 3) / 255.0  # [0, 1] units
    # Zero-mean shift.
    assert np.all(np.abs(shift.mean(0)) < 4 * 0.1 * 0.2175 / np.sqrt(n) + 1e-4)
    # Along eigenvector i the shift is alpha_i * lambda_i: std 0.1 * lambda_i, uncorrelated.
    proj = shift @ stats.eigvec  # (n, 3)
    np.testing.assert_allclose(proj.std(0), 0.1 * stats.eigval, rtol=0.05)
    corr = np.corrcoef(proj.T)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.05)
    np.testing.assert_allclose(proj, alpha.numpy() * stats.eigval, atol=1e-5)


def test_pca_alpha_drawn_with_paper_spread():
    alphas = data_lib.random_choices(tf.range(4000, dtype=tf.int64), CFG, True)[2].numpy()
    assert abs(alphas.mean()) < 0.006 and abs(alphas.std() - 0.1) < 0.004
    # Normal: about 68.3% within one standard deviation, 95.4% within two.
    assert abs(np.mean(np.abs(alphas) < 0.1) - 0.683) < 0.02 and abs(np.mean(np.abs(alphas) < 0.2) - 0.954) < 0.01


def test_mean_subtraction_matches_numpy():
    rng = np.random.default_rng(2)
    mean_image = rng.uniform(0, 255, (R, R, 3)).astype(np.float32)
    images = rng.integers(0, 256, (4, C, C, 3), dtype=np.uint8)
    offsets = np.array([[0, 0], [5, 1], [2, 5], [R - C, R - C]], np.int32)
    flips = np.array([False, True, True, False])
    batch = {"image": images, "offset": offsets, "flip": flips, "alpha": np.zeros((4, 3), np.float32)}
    stats = {"mean_image": mean_image, "eigval": np.ones(3, np.float32), "eigvec": np.eye(3, dtype=np.float32)}
    cfg = DataConfig(resize_size=R, crop_size=C, pca_noise_std=0.0)
    out = data_lib.device_preprocess(batch, stats, cfg).numpy()
    jitted = tf.function(lambda b: data_lib.device_preprocess(b, stats, cfg), jit_compile=True)(batch).numpy()
    for i in range(4):
        t, left = offsets[i]
        expected = images[i].astype(np.float32) - mean_image[t : t + C, left : left + C]
        if flips[i]:  # each pixel loses its own mean, then the crop is mirrored
            expected = expected[:, ::-1]
        np.testing.assert_allclose(out[i], expected, atol=1e-4)
    np.testing.assert_allclose(jitted, out, atol=1e-4)
    # data.input_scale multiplies what the net sees, after the mean and the flip
    scaled = data_lib.device_preprocess(batch, stats, dataclasses.replace(cfg, input_scale=1 / 64)).numpy()
    np.testing.assert_allclose(scaled, out / 64, atol=1e-5)


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_centre_crops_preprocessed_with_crop_at_as_numpy_says(order):
    """Serving's and predict_images' shortcut (`crop_at`: the centre, no flip, no noise)
    gives the centre crop minus the mean image's centre, scaled, in the net's channel
    order; with colour noise on in the config, evaluation adds none."""
    rng = np.random.default_rng(7)
    mean_image = rng.uniform(0, 255, (R, R, 3)).astype(np.float32)
    cfg = DataConfig(resize_size=R, crop_size=C, pca_noise_std=0.1, input_scale=1 / 64, channel_order=order)
    resized = rng.integers(0, 256, (3, R, R, 3), dtype=np.uint8)
    batch, views = data_lib.batch.views(tf.constant(resized), cfg, "center")
    stats = {"mean_image": mean_image, "eigval": np.ones(3, np.float32), "eigvec": np.eye(3, dtype=np.float32)}
    at = data_lib.batch.crop_at(cfg, "center")
    assert at == ((R - C) // 2,) * 2 and data_lib.batch.crop_at(cfg, "ten") is None
    out = data_lib.device_preprocess(batch, stats, cfg, crop_at=at).numpy()
    t = (R - C) // 2
    expected = (resized[:, t : t + C, t : t + C].astype(np.float32) - mean_image[t : t + C, t : t + C]) / 64
    expected = expected[..., ::-1] if order == "bgr" else expected
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(data_lib.device_preprocess(batch, stats, cfg).numpy(), out, atol=1e-4)


def test_compute_stats_matches_numpy():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2  # correlated channels
    stats = data_lib.compute_stats(tf.data.Dataset.from_tensor_slices(images), 8)
    np.testing.assert_allclose(stats.mean_image, images.mean(0), rtol=1e-5)
    cov = np.cov(images.reshape(-1, 3).T.astype(np.float64) / 255.0, bias=True)
    val, vec = np.linalg.eigh(cov)
    np.testing.assert_allclose(stats.eigval, val[::-1], rtol=1e-4, atol=1e-7)
    for i in range(3):  # eigenvectors up to sign
        assert abs(abs(float(stats.eigvec[:, i] @ vec[:, 2 - i])) - 1) < 1e-4


# ----------------------------------------------------------------------------- sources
def collect(ds):
    out = {k: [] for k in ("label", "offset", "flip", "image", "weight")}
    for b in ds.as_numpy_iterator():
        for k in out:
            out[k].append(b[k])
    return {k: np.concatenate(v) for k, v in out.items()}


def test_folder_source_and_training_batches(tmp_path):
    source = data_lib.open_source("folder:" + make_folder(str(tmp_path)))
    assert source.class_names == ["cat", "dog", "eel"]
    assert source.sizes["train"] == 15 and source.sizes["validation"] == 15
    ds = data_lib.train_dataset(source, CFG, "train", 4, seed=1)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 15 // 4
    b = batches[0]
    assert b["image"].dtype == np.uint8 and b["image"].shape == (4, C, C, 3)
    assert b["offset"].dtype == np.int32 and b["flip"].dtype == bool and b["alpha"].shape == (4, 3)
    # Deterministic: the same seed and epoch give the same batches; another epoch differs.
    again = collect(data_lib.train_dataset(source, CFG, "train", 4, seed=1))
    first = collect(ds)
    np.testing.assert_array_equal(first["image"], again["image"])
    other = collect(data_lib.train_dataset(source, CFG, "train", 4, seed=1, epoch=1))
    assert not np.array_equal(first["image"], other["image"])


def test_training_takes_a_folder_in_a_random_order_of_the_whole_list(tmp_path):
    """A folder lists its files class by class; training draws a permutation of the whole
    list from (seed, epoch), whatever the shuffle buffer (which only mixes neighbours)."""
    source = data_lib.open_source("folder:" + make_folder(str(tmp_path), per_class=8))
    cfg = dataclasses.replace(CFG, shuffle_buffer=1, random_flip=False, pca_noise_std=0.0)
    epoch0 = collect(data_lib.train_dataset(source, cfg, "train", 24, seed=3))
    assert sorted(epoch0["label"]) == [0] * 8 + [1] * 8 + [2] * 8  # every file once
    assert len({x.tobytes() for x in epoch0["image"]}) == 24
    assert len(set(epoch0["label"][:6])) > 1 and list(epoch0["label"]) != sorted(epoch0["label"])
    epoch1 = collect(data_lib.train_dataset(source, cfg, "train", 24, seed=3, epoch=1))
    assert list(epoch1["label"]) != list(epoch0["label"])


def test_resume_with_skip_batches_is_exact(tmp_path):
    source = data_lib.open_source("folder:" + make_folder(str(tmp_path)))
    full = collect(data_lib.train_dataset(source, CFG, "train", 3, seed=4))
    rest = collect(data_lib.train_dataset(source, CFG, "train", 3, seed=4, skip_batches=2))
    for k in full:
        np.testing.assert_array_equal(full[k][6:], rest[k])


@pytest.mark.slow
def test_tf_data_service_gives_the_local_batches(tmp_path):
    """With data.service_address the per-image work runs on a tf.data service worker
    (here an in-process dispatcher and worker) and the batches are the local ones."""
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    address = dispatcher.target  # grpc://localhost:PORT
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=address.split("://")[1]))
    source = data_lib.open_source("folder:" + make_folder(str(tmp_path)))
    local = collect(data_lib.train_dataset(source, CFG, "train", 3, seed=4, epoch=1))
    remote_cfg = dataclasses.replace(CFG, service_address=address)
    assert worker._num_tasks() == 0
    remote = collect(data_lib.train_dataset(source, remote_cfg, "train", 3, seed=4, epoch=1))
    assert worker._num_tasks() == 1  # the epoch was produced by the service worker
    assert len(local["label"]) == 15
    for k in local:
        np.testing.assert_array_equal(local[k], remote[k])
    worker.stop()
    dispatcher.stop()


@pytest.mark.parametrize("kind", ["folder", "tfrecord"])
def test_sharding_covers_every_example_once(tmp_path, kind):
    root = make_folder(str(tmp_path / "src"), per_class=4)
    if kind == "tfrecord":
        from alexnet_tf import shards

        shards.prepare("folder:" + root, str(tmp_path / "out"), size=R, shard_size=5, quiet=True)
        root = str(tmp_path / "out")
    source = data_lib.open_source(f"{kind}:{root}")
    cfg = DataConfig(resize_size=R, crop_size=C, shuffle_buffer=1000, random_flip=False)
    one = collect(data_lib.eval_dataset(source, cfg, "val", 2))
    parts = [
        collect(
            data_lib.eval_dataset(
                source,
                cfg,
                "val",
                2,
                input_context=tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i),
            )
        )
        for i in range(2)
    ]
    keep = [p["weight"] > 0 for p in parts]
    images = np.concatenate([p["image"][k] for p, k in zip(parts, keep)])
    assert len(images) == source.sizes["val"] == 12
    # Same multiset of images as one pipeline, and no image twice.
    key = lambda a: sorted(x.tobytes() for x in a)  # noqa: E731
    assert key(images) == key(one["image"][one["weight"] > 0])
    assert len({x.tobytes() for x in images}) == 12
    # Training: the two pipelines' batches are the two halves of the unsharded global
    # batch, random choices included.
    train = collect(data_lib.train_dataset(source, cfg, "train", 12, seed=2))
    shards = [
        collect(
            data_lib.train_dataset(
                source,
                cfg,
                "train",
                6,
                seed=2,
                input_context=tf.distribute.InputContext(
                    num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
                ),
            )
        )
        for i in range(2)
    ]
    assert sum(len(s["label"]) for s in shards) == 12
    for k in train:
        np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), train[k])


def test_flat_validation_folder_with_label_file(tmp_path):
    root = make_folder(str(tmp_path), per_class=2)
    flat = tmp_path / "val"
    rng = np.random.default_rng(5)
    for c in ("cat", "dog", "eel"):
        for f in os.listdir(flat / c):
            os.remove(flat / c / f)
        os.rmdir(flat / c)
    lines = []
    for i, label in enumerate(["eel", "cat", "dog", "eel"]):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        (flat / f"{name}.JPEG").write_bytes(jpeg_bytes(random_image(rng, 30, 30)))
        lines.append(f"{name}.JPEG {label}" if i % 2 else f"{name} {['cat', 'dog', 'eel'].index(label)}")
    (tmp_path / "val_labels.txt").write_text("\n".join(lines) + "\n")
    source = data_lib.open_source("folder:" + root)
    labels = [int(y) for _, _, y, _ in source.examples("validation").as_numpy_iterator()]
    assert labels == [2, 0, 1, 2]
    (tmp_path / "val_labels.txt").write_text("ILSVRC2012_val_00000001 2\n")
    with pytest.raises(data_lib.DataError, match="have no label"):
        data_lib.open_source("folder:" + root)


def test_tfrecord_source_via_prepare(tmp_path):
    from alexnet_tf import shards

    root = make_folder(str(tmp_path / "src"), per_class=3, size=(40, 60))
    (tmp_path / "src/train/cat/broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = str(tmp_path / "out")
    report = shards.prepare("folder:" + root, out, size=R, shard_size=4, quiet=True)
    assert report["skipped"] == 1 and report["written"] == {"train": 9, "val": 9}
    with open(os.path.join(out, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["class_names"] == ["cat", "dog", "eel"]
    source = data_lib.open_source("tfrecord:" + out)
    assert source.sizes == {"train": 9, "val": 9} and source.class_names == ["cat", "dog", "eel"]
    # Stored images are the centre-cropped resize, JPEG-encoded, with labels and file names kept.
    folder = data_lib.open_source("folder:" + root)
    originals = {n.decode(): (x, int(y)) for _, x, y, n in folder.examples("val").as_numpy_iterator()}
    stored = list(source.examples("val").as_numpy_iterator())
    assert sorted(n.decode() for _, _, _, n in stored) == sorted(originals)
    for _, data, label, name in stored[:3]:
        raw, want_label = originals[name.decode()]
        want = tf.io.encode_jpeg(data_lib.decode_and_resize(tf.constant(raw), R, True), quality=95)
        np.testing.assert_array_equal(tf.io.decode_jpeg(data).numpy(), tf.io.decode_jpeg(want).numpy())
        assert label == want_label
    labels = [int(y) for _, _, y, _ in source.examples("train").as_numpy_iterator()]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The folder (sorted by class) is written in a fixed random order: shards mix classes.
    assert labels != sorted(labels)
    batches = list(data_lib.train_dataset(source, CFG, "train", 3).as_numpy_iterator())
    assert len(batches) == 3 and batches[0]["image"].shape == (3, C, C, 3)
    # A glob selects one split.
    only_val = data_lib.open_source("tfrecord:" + os.path.join(out, "val-*"))
    assert list(only_val.sizes) == ["val"]
    # Resumable: a second run finds every shard finished and rewrites nothing.
    mtimes = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".tfrecord")}
    again = shards.prepare("folder:" + root, out, size=R, shard_size=4, quiet=True)
    assert again["resumed_shards"] == len(mtimes)
    assert mtimes == {f: os.path.getmtime(os.path.join(out, f)) for f in mtimes}
    # A shard lost in the middle is written again with the same examples (same order).
    middle = "train-00001-of-00003.tfrecord"
    before = list(tf.data.TFRecordDataset(os.path.join(out, middle)).as_numpy_iterator())
    os.remove(os.path.join(out, middle))
    third = shards.prepare("folder:" + root, out, size=R, shard_size=4, quiet=True)
    assert third["resumed_shards"] == len(mtimes) - 1 and third["written"] == {"train": 9, "val": 9}
    assert list(tf.data.TFRecordDataset(os.path.join(out, middle)).as_numpy_iterator()) == before


def test_tfrecord_shards_are_read_in_a_new_order_each_epoch(tmp_path):
    """Training reads a sharded source's shards in an order drawn from (seed, epoch), so
    an example does not meet the same neighbours in the shuffle buffer every epoch."""
    from alexnet_tf import shards

    root = make_folder(str(tmp_path / "src"), per_class=4, size=(40, 60))
    out = str(tmp_path / "out")
    shards.prepare("folder:" + root, out, size=R, shard_size=2, quiet=True)
    source = data_lib.open_source("tfrecord:" + out)
    assert len([f for f in os.listdir(out) if f.startswith("train-")]) == 6

    def names(shard_seed):
        return [n.decode() for _, _, _, n in source.examples("train", shard_seed).as_numpy_iterator()]

    fixed = names(None)
    assert fixed == names(None) and len(set(fixed)) == 12
    orders = [names([0, epoch]) for epoch in range(3)]
    assert orders[0] == names([0, 0])  # the same (seed, epoch), the same order
    assert all(sorted(o) == sorted(fixed) for o in orders)  # every example once
    assert len({tuple(o) for o in orders + [fixed]}) == 4

    # train_dataset uses it: with no shuffle buffer, an epoch's labels follow the shard order.
    cfg = dataclasses.replace(CFG, shuffle_buffer=1)

    def labels(epoch):
        ds = data_lib.train_dataset(source, cfg, "train", 4, epoch=epoch)
        return [int(y) for b in ds.as_numpy_iterator() for y in b["label"]]

    by_name = {n.decode(): int(y) for _, _, y, n in source.examples("train").as_numpy_iterator()}
    assert labels(1) == [by_name[n] for n in orders[1]]
    assert labels(0) != labels(1) or labels(1) != labels(2)


def test_unreadable_records_become_weight_zero_rows(tmp_path):
    """A record whose image bytes do not decode: a weight-0 row of its batch, reported
    under its file name, while the record file's other examples train."""
    from alexnet_tf import shards

    root = make_folder(str(tmp_path / "src"), per_class=2)
    out = str(tmp_path / "out")
    shards.prepare("folder:" + root, out, size=R, shard_size=4, quiet=True)
    good = jpeg_bytes(random_image(np.random.default_rng(1), R, R))
    bad = {b"cut.JPEG": good[: len(good) // 2], b"text.JPEG": b"<html>not found</html>"}
    with tf.io.TFRecordWriter(os.path.join(out, "train-extra.tfrecord")) as w:
        for name, data in bad.items():
            w.write(shards.example_record(data, 1, name))
        w.write(shards.example_record(good, 2, b"fine.JPEG"))
    with open(os.path.join(out, "metadata.json")) as f:
        meta = json.load(f)
    meta["shards"].append({"file": "train-extra.tfrecord", "split": "train", "count": 3})
    with open(os.path.join(out, "metadata.json"), "w") as f:
        json.dump(meta, f)
    source = data_lib.open_source("tfrecord:" + out)
    assert source.sizes["train"] == 9
    bad_files = data_lib.BadFiles()
    got = collect(data_lib.train_dataset(source, CFG, "train", 9, bad_files=bad_files))
    assert len(got["weight"]) == 9 and got["weight"].sum() == 7
    assert not got["weight"][7:].any() and not got["image"][7:].any()  # the stand-ins come last
    assert sorted(got["label"][7:]) == [1, 1]
    reasons = {e["file"]: e["reason"] for e in bad_files.summary()["examples"]}
    assert reasons == {"cut.JPEG": "truncated or corrupt image", "text.JPEG": "not an image (unknown format)"}


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        source = data_lib.open_source("tfds:imagenet2012")
        assert source.num_classes == 1000 and source.encoded
        assert source.sizes["train"] == 6
        cfg = DataConfig(resize_size=R, crop_size=C)
        batches = list(data_lib.train_dataset(source, cfg, "train", 3).as_numpy_iterator())
        assert len(batches) == 2 and batches[0]["image"].shape == (3, C, C, 3)
        assert all(0 <= y < 1000 for b in batches for y in b["label"])
        ev = list(data_lib.eval_dataset(source, cfg, "validation", 4).as_numpy_iterator())
        assert sum(b["weight"].sum() for b in ev) == source.sizes["validation"]


def test_missing_imagenet_names_the_tars(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    cfg = DataConfig(tfds_data_dir=str(tmp_path))
    with pytest.raises(data_lib.DataError, match=r"ILSVRC2012_img_train\.tar.*ILSVRC2012_img_val\.tar.*manual"):
        data_lib.open_source("tfds:imagenet2012", cfg)


def test_unknown_source_is_explained():
    with pytest.raises(data_lib.DataError, match="valid forms"):
        data_lib.open_source("s3:bucket")
    with pytest.raises(data_lib.DataError, match="prepare"):
        data_lib.open_source("tfrecord:/nonexistent/dir")


# ----------------------------------------------------------------------------- bad files
def test_bad_file_zoo(tmp_path):
    root = make_folder(str(tmp_path), per_class=2, classes=("a", "b"))
    rng = np.random.default_rng(6)
    good = jpeg_bytes(random_image(rng, 40, 40))
    zoo = {
        # converted: decoded and used
        "png_named.JPEG": jpeg_bytes(random_image(rng, 40, 40), fmt="PNG"),
        "cmyk.JPEG": jpeg_bytes(random_image(rng, 40, 40), mode="CMYK"),
        "grey.JPEG": jpeg_bytes(random_image(rng, 40, 40), mode="L"),
        "tiny.JPEG": jpeg_bytes(random_image(rng, 3, 5)),
        # skipped and counted
        "truncated.JPEG": good[: len(good) // 3],
        "text.JPEG": b"<html>not found</html>",
        "empty.JPEG": b"",
    }
    for name, raw in zoo.items():
        (tmp_path / "train" / "a" / name).write_bytes(raw)
    # A file listed but gone when it is read (a dangling link here).
    (tmp_path / "train" / "a" / "gone.JPEG").symlink_to(tmp_path / "nowhere")
    source = data_lib.open_source("folder:" + root)
    assert source.sizes["train"] == 4 + len(zoo) + 1
    cfg = DataConfig(resize_size=R, crop_size=C, shuffle_buffer=1000)
    bad_files = data_lib.BadFiles()
    got = collect(data_lib.train_dataset(source, cfg, "train", 5, bad_files=bad_files))
    # 12 files, 4 unreadable: the epoch still has 12 // 5 batches of 5, the unreadable
    # files' rows carry weight 0 (and their labels), the others weight 1.
    assert len(got["label"]) == 10
    bad = got["weight"] == 0
    assert bad.any()  # seed 0 puts unreadable files inside the epoch
    assert got["weight"].sum() == 10 - bad.sum() and set(np.unique(got["weight"])) <= {0.0, 1.0}
    assert not got["image"][bad].any() and (got["label"][bad] == 0).all()  # all in class "a"
    summary = bad_files.summary()
    assert summary["count"] == bad.sum()
    # The epoch's last batch holds the remaining two examples and is left out: all 12
    # files are read over a batch of 12.
    bad_files = data_lib.BadFiles()
    whole = collect(data_lib.train_dataset(source, cfg, "train", 12, bad_files=bad_files))
    assert whole["weight"].sum() == 8 and len(whole["weight"]) == 12
    summary = bad_files.summary()
    assert summary["count"] == 4
    reasons = {os.path.basename(e["file"]): e["reason"] for e in summary["examples"]}
    assert reasons == {
        "truncated.JPEG": "truncated or corrupt image",
        "text.JPEG": "not an image (unknown format)",
        "empty.JPEG": "empty file",
        "gone.JPEG": "cannot be read",
    }
    assert "skipped 4 unreadable" in bad_files.message()
    # The converted ones are really there: CMYK and grey decode to 3 channels.
    cmyk = data_lib.decode_and_resize(tf.constant(zoo["cmyk.JPEG"]), R, True)
    grey = data_lib.decode_and_resize(tf.constant(zoo["grey.JPEG"]), R, True).numpy()
    assert cmyk.shape == (R, R, 3) and np.array_equal(grey[..., 0], grey[..., 1])
    # Each of the 8 readable examples once, in the batch's first rows; the stand-ins last.
    assert whole["weight"][:8].all() and not whole["weight"][8:].any()
    assert len({x.tobytes() for x in whole["image"][:8]}) == 8
    # A second epoch over the same files does not count them again.
    collect(data_lib.train_dataset(source, cfg, "train", 2, epoch=1, bad_files=bad_files))
    assert bad_files.summary()["count"] == 4
    # Evaluation keeps every position: unreadable files become weight-0 rows.
    for name, raw in zoo.items():
        (tmp_path / "val" / "a" / name).write_bytes(raw)
    (tmp_path / "val" / "a" / "gone.JPEG").symlink_to(tmp_path / "nowhere")
    ev = collect(data_lib.eval_dataset(data_lib.open_source("folder:" + root), cfg, "val", 4))
    assert len(ev["weight"]) == 12 and ev["weight"].sum() == 8


def test_stats_command_matches_numpy(tmp_path, capsys):
    from alexnet_tf import stats as stats_cli

    root = make_folder(str(tmp_path / "src"), per_class=2, classes=("a", "b"))
    (tmp_path / "src/train/a/junk.JPEG").write_bytes(b"junk")
    (tmp_path / "src/train/a/gone.JPEG").symlink_to(tmp_path / "nowhere")
    out = str(tmp_path / "stats")
    assert stats_cli.main(["--data", root, "--out", out, "--size", str(R)]) == 0
    assert "skipped 2 unreadable image file(s)" in capsys.readouterr().out
    loaded = data_lib.Stats.load(os.path.join(out, "stats.npz"))
    good = sorted(glob.glob(os.path.join(root, "train", "*", "[!jg]*.JPEG")))
    images = np.stack([data_lib.decode_and_resize(tf.io.read_file(p), R, True).numpy() for p in good]).astype(
        np.float64
    )
    assert len(images) == 4
    np.testing.assert_allclose(loaded.mean_image, images.mean(0), rtol=1e-5)
    cov = np.cov(images.reshape(-1, 3).T / 255.0, bias=True)
    np.testing.assert_allclose(loaded.eigval, np.linalg.eigvalsh(cov)[::-1], rtol=1e-4)


def test_prepare_and_stats_commands_report_errors_in_one_line(tmp_path, capsys):
    from alexnet_tf import prepare, stats

    assert prepare.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert stats.main(["--data", "folder:" + str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: folder") for line in err)


def test_in_memory_arrays_are_resized_before_cropping():
    """28 px Fashion-MNIST arrays: shorter side to 40 (Sec. 2), then the central 32 crop."""
    source = data_lib.open_source("builtin:fashion_mnist")
    cfg = DataConfig(resize_size=40, crop_size=32, shuffle_buffer=1)
    batch = next(iter(data_lib.eval_dataset(source, cfg, "test", 4)))
    assert batch["image"].shape == (4, 32, 32, 3)
    for i, (_, image, _, _) in enumerate(source.examples("test").take(4)):
        resized = tf.image.resize(tf.cast(image, tf.float32), (40, 40), antialias=True)
        want = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)[4:36, 4:36]
        np.testing.assert_array_equal(batch["image"][i].numpy(), want.numpy())


@pytest.mark.parametrize("kind", ["builtin", "folder", "tfrecord", "tfds"])
def test_random_labels_stay_with_their_example(tmp_path, kind):
    """data.random_labels: each example keeps its random label in every epoch, whatever
    order the source reads it in (TFRecord and TFDS shards are read in a new order each
    epoch), and the labels have nothing to do with the true ones."""
    from contextlib import nullcontext

    from alexnet_tf import shards

    mock, split = nullcontext(), "train"
    if kind == "builtin":
        spec, n_classes, split = "builtin:fashion_mnist", 10, "test"  # 2,000 examples
    elif kind == "tfds":
        tfds = pytest.importorskip("tensorflow_datasets")
        mock, spec, n_classes = tfds.testing.mock_data(num_examples=24), "tfds:imagenet2012", 1000
    else:
        root = make_folder(str(tmp_path / "src"), per_class=8, classes=tuple("abcdef"))
        spec, n_classes = "folder:" + root, 6
        if kind == "tfrecord":
            shards.prepare(spec, str(tmp_path / "out"), size=R, shard_size=3, quiet=True)
            spec = "tfrecord:" + str(tmp_path / "out")
    # crop = the whole image, no flip, no noise: an example's batch row is its image
    cfg = DataConfig(resize_size=R, crop_size=R, pca_noise_std=0.0, random_flip=False, random_labels=True)
    with mock:
        source = data_lib.open_source(spec)

        def labels_by_image(epoch):
            out = {}
            for b in data_lib.train_dataset(source, cfg, split, 8, seed=3, epoch=epoch):
                for image, label in zip(b["image"].numpy(), b["label"].numpy()):
                    out.setdefault(image.tobytes(), []).append(int(label))
            return {k: sorted(v) for k, v in out.items()}

        first, second = labels_by_image(0), labels_by_image(1)
    assert first == second and len(first) >= 24
    labels = [y for v in first.values() for y in v]
    assert len(set(labels)) >= min(n_classes, len(labels)) // 2  # spread over the classes
    if kind == "builtin":  # about 1 in 10 keep their true label, classes balanced
        true = {}
        resized = source.examples(split).map(lambda i, x, y, n: (data_lib.resize_central(x, R), y))
        for x, y in resized.as_numpy_iterator():
            true.setdefault(x.tobytes(), []).append(int(y))
        agree = np.mean([sorted(true[k]) == v for k, v in first.items() if len(v) == 1])
        assert 0.06 < agree < 0.14
        assert np.bincount(labels, minlength=10).min() > 0.8 * len(labels) / 10


@pytest.mark.parametrize("resize", ["shorter_side", "warp"])
def test_an_image_already_at_the_size_is_left_as_it_is(resize):
    """What the antialiased resize gives an image of the target size (itself), without
    the resize: eager, and traced with an unknown shape as in the export's signature."""
    image = np.random.default_rng(3).integers(0, 256, (R, R, 3), dtype=np.uint8)
    resized = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (R, R), antialias=True)), 0, 255), tf.uint8)
    np.testing.assert_array_equal(resized.numpy(), image)  # the identity the shortcut relies on
    np.testing.assert_array_equal(data_lib.resize_square(tf.constant(image), R, resize).numpy(), image)
    traced = tf.function(lambda x: data_lib.resize_square(x, R, resize))
    traced = traced.get_concrete_function(tf.TensorSpec([None, None, 3], tf.uint8))
    np.testing.assert_array_equal(traced(tf.constant(image)).numpy(), image)
    other = np.random.default_rng(4).integers(0, 256, (R + 10, R - 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        traced(tf.constant(other)).numpy(), data_lib.resize_square(tf.constant(other), R, resize).numpy()
    )


@pytest.mark.parametrize("resize", ["shorter_side", "warp"])
def test_a_batch_is_resized_as_each_of_its_images(resize):
    """The export's uint8 signature resizes a batch (one size for all) in one op: each
    image as resize_square makes it alone; a batch already at the size as it is."""
    batch = np.random.default_rng(5).integers(0, 256, (3, R + 13, R - 7, 3), dtype=np.uint8)
    traced = tf.function(lambda x: data_lib.resize_square(x, R, resize))
    traced = traced.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.uint8))
    out = traced(tf.constant(batch)).numpy()
    assert out.shape == (3, R, R, 3)
    for image, resized in zip(batch, out):
        np.testing.assert_array_equal(resized, data_lib.resize_square(tf.constant(image), R, resize).numpy())
    at_size = np.random.default_rng(6).integers(0, 256, (2, R, R, 3), dtype=np.uint8)
    np.testing.assert_array_equal(traced(tf.constant(at_size)).numpy(), at_size)
