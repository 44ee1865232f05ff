"""The export run as TF Serving runs it (alexnet_tf.serve.session): a Session's callables
give what TensorFlow's own loader, tf.saved_model.load, gives for every signature, on the
calling thread or in the pool; the server's errors read as before; `bench export` times
that runtime with the server's thread plan."""

import json
import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
from helpers import QUICKSTART, python_in

from alexnet_tf import data as data_lib
from alexnet_tf.config import load_recipe, override
from alexnet_tf.exporting import export_saved_model
from alexnet_tf.model import build_model
from alexnet_tf.nets import TrainedNet
from alexnet_tf.serve.inputs import RequestError
from alexnet_tf.serve.model import Servable
from alexnet_tf.serve.session import SessionModel


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    config = override(load_recipe(QUICKSTART), {"model.num_classes": 3})
    net = TrainedNet(config, build_model(config.model), data_lib.Stats.imagenet(config.data.resize_size), list("abc"))
    return export_saved_model(net, str(tmp_path_factory.mktemp("session") / "q" / "1"))


def _inputs():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 90, 70, 3), np.uint8)
    jpegs = [tf.io.encode_jpeg(p).numpy() for p in pixels]
    feature = lambda b: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))  # noqa: E731
    examples = [
        tf.train.Example(features=tf.train.Features(feature={"image/encoded": feature(b)})).SerializeToString()
        for b in jpegs
    ]
    return {
        "serve_uint8": {"images": pixels},
        "serving_default": {"images": jpegs},
        "classification": {"inputs": examples},
    }


@pytest.mark.parametrize("inline, parts", [(True, 1), (False, 1), (True, 2)])
def test_every_signature_gives_what_tf_saved_model_load_gives(small_export, inline, parts):
    """On the calling thread or in the pool, and with a call's 3 rows split in 2 calls at
    once (1 and 2 rows, the second on a thread of the model's own)."""
    model = SessionModel(small_export, inline=inline, parts=parts)
    loaded = tf.saved_model.load(small_export).signatures
    assert set(model.signature_defs) == set(loaded) == {"serve_uint8", "serving_default", "classification"}
    for name, inputs in _inputs().items():
        theirs = loaded[name](**{k: tf.constant(v) for k, v in inputs.items()})
        ours = model(name, inputs)
        assert set(ours) == set(theirs)
        for k, v in theirs.items():
            expected = v.numpy()
            assert ours[k].dtype == expected.dtype and ours[k].shape == expected.shape == (3, 3)
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(ours[k], expected, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(ours[k], expected)
        # the signature's specs, as the eager signature states them
        assert model.inputs[name] == {
            k: tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in loaded[name].structured_input_signature[1].items()
        }
        assert {k: (s.shape.as_list(), s.dtype) for k, s in model.outputs[name].items()} == {
            k: (s.shape.as_list(), s.dtype) for k, s in loaded[name].structured_outputs.items()
        }
    helpers = [t for t in threading.enumerate() if t.name.startswith("session-part")]
    assert len(helpers) == parts - 1
    model.close()


def test_an_unreadable_image_is_a_400_that_says_why(small_export):
    servable = Servable(os.path.dirname(small_export))
    with pytest.raises(RequestError) as e:
        servable.run("serving_default", {"images": [b"not an image"]})
    assert e.value.status == 400
    assert str(e.value).startswith("could not process the input: Unknown image file format"), str(e.value)
    # a well-formed call on the same Servable still answers
    assert servable.run("serve_uint8", {"images": np.zeros((1, 8, 8, 3), np.uint8)})["classes"].shape == (1, 3)


@pytest.mark.slow
def test_bench_export_times_the_session_with_the_servers_plan(small_export, tmp_path):
    """From a user's working directory, with a relative path, in a fresh process: the small
    net's calls on one thread each, on the calling thread; `--runtime eager` as before."""
    shutil.copytree(os.path.dirname(small_export), tmp_path / "exports" / "q")

    def lines(*flags):
        command = ["-m", "alexnet_tf.bench", "export", "exports/q/1", "--image-size", "76", "--batch", "2"]
        out = python_in(tmp_path, *command, "--calls", "3", "--warmup", "1", *flags)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    (row,) = lines()
    assert (row["runtime"], row["intra_op_threads"], row["inline"], row["batch"]) == ("session", 1, True, 2)
    assert row["parts"] == len(os.sched_getaffinity(0))
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    (row,) = lines("--runtime", "eager", "--threads", "1")
    assert (row["runtime"], row["intra_op_threads"], row["inter_op_threads"], row["inline"]) == ("eager", 1, 1, False)
