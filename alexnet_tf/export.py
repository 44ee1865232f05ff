"""A trained run as a SavedModel for TF Serving and `tf.saved_model.load`.

`python -m alexnet_tf.export --workdir DIR --out EXPORT_DIR [--crops center|ten]`

Signatures (both return the top-5 classes, best first):
  serving_default  images: tf.string (B,), JPEG/PNG/GIF/BMP bytes of any size
  serve_uint8      images: tf.uint8 (B, H, W, 3), RGB pixels of any size
  outputs          classes int32 (B, 5), class_names string (B, 5), probabilities float32 (B, 5),
                   and for ImageNet's synsets class_descriptions string (B, 5) ("tench, Tinca tinca")

The preprocessing of training is inside: shorter side to `data.resize_size` and the
central square (Sec. 2), the centre crop or the ten crops of Sec. 4.1 (softmax
averaged), minus the training set's mean image. Class names and the mean image are
baked in. The grouped convolutions are exported as two convolutions + concat, so the
model runs without XLA (TF Serving's default).
"""

from __future__ import annotations

import argparse
import os

import keras
import tensorflow as tf

from alexnet_tf import data as data_lib
from alexnet_tf import steps as steps_lib
from alexnet_tf.runs import TrainedRun, load_run

TOP_K = 5


def preprocess(images: tf.Tensor, run: TrainedRun, crops: str, encoded: bool) -> tuple[tf.Tensor, int]:
    """Encoded image bytes (B,) or uint8 (B, H, W, 3) -> model inputs (B * views, c, c, 3)
    and the number of views."""
    d = run.config.data
    images = tf.map_fn(
        lambda x: data_lib.decode_and_resize(x, d.resize_size, encoded=encoded),
        images,
        fn_output_signature=tf.TensorSpec((d.resize_size, d.resize_size, 3), tf.uint8),
    )  # (B, R, R, 3)
    return _crop_and_normalize(images, run, crops)


def _crop_and_normalize(images: tf.Tensor, run: TrainedRun, crops: str) -> tuple[tf.Tensor, int]:
    d = run.config.data
    if crops == "ten":
        batch = tf.map_fn(
            lambda x: data_lib.ten_crop_example(x, 0, d),
            images,
            fn_output_signature={
                "image": tf.TensorSpec((10, *([d.pad_crop or d.crop_size] * 2), 3), tf.uint8),
                "offset": tf.TensorSpec((10, 2), tf.int32),
                "flip": tf.TensorSpec((10,), tf.bool),
                "alpha": tf.TensorSpec((10, 3), tf.float32),
                "label": tf.TensorSpec((10,), tf.int32),
                "weight": tf.TensorSpec((10,), tf.float32),
            },
        )
        batch = {k: tf.reshape(v, [-1, *v.shape[2:]]) for k, v in batch.items()}  # (B * 10, ...)
        views = 10
    else:
        c = d.pad_crop or d.crop_size
        top = (d.resize_size - c) // 2
        n = tf.shape(images)[0]
        batch = {
            "image": images[:, top : top + c, top : top + c, :],
            "offset": tf.fill([n, 2], top),
            "flip": tf.zeros([n], tf.bool),
            "alpha": tf.zeros([n, 3]),
        }
        views = 1
    return data_lib.device_preprocess(batch, steps_lib.stats_tensors(run.stats), d, tf.float32), views


def class_outputs(run: TrainedRun, indices: tf.Tensor) -> dict:
    """`class_names` of the classes at `indices` and, where the run has them (ImageNet's
    synsets), `class_descriptions`: the synset stays the class id, as in Keras'
    `decode_predictions` (class_name, class_description, score)."""
    out = {"class_names": tf.gather(tf.constant(run.class_names), indices)}
    if run.class_descriptions:
        out["class_descriptions"] = tf.gather(tf.constant(run.class_descriptions), indices)
    return out


def export(run: TrainedRun, out: str, crops: str = "center") -> str:
    """Writes `run` (restored in split form, see `load_run`) as a SavedModel in `out`."""
    if crops not in ("center", "ten"):
        raise ValueError(f"crops must be 'center' or 'ten', got {crops!r}")
    model = run.model
    k = min(TOP_K, len(run.class_names))

    def predict(x: tf.Tensor, views: int) -> dict:
        probs = steps_lib.average_views(tf.nn.softmax(model(x, training=False)), views)  # (B, classes)
        top = tf.math.top_k(probs, k=k)
        return {
            "classes": top.indices,  # (B, k) int32
            **class_outputs(run, top.indices),  # (B, k) string each
            "probabilities": top.values,  # (B, k) float32
        }

    def serve_encoded(images):
        return predict(*preprocess(images, run, crops, encoded=True))

    def serve_uint8(images):
        return predict(*preprocess(images, run, crops, encoded=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_encoded, [tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("serve_uint8", serve_uint8, [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.write_out(out, verbose=False)
    return out


def main(argv=None) -> int:
    from alexnet_tf import cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.export", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="run folder (newest checkpoint) or checkpoint prefix")
    parser.add_argument("--out", required=True, help="SavedModel folder to write (e.g. exports/alexnet/1)")
    parser.add_argument(
        "--crops", choices=("center", "ten"), default="center", help="centre crop or Sec. 4.1's 10 crops"
    )
    args = parser.parse_args(argv)

    def _main():
        run = load_run(args.workdir, split_form=True)
        export(run, args.out, crops=args.crops)
        print(
            f"exported {run.checkpoint} ({args.crops} crop{'s' if args.crops == 'ten' else ''}) to {os.path.abspath(args.out)}"
        )
        print(f"inspect with: saved_model_cli show --dir {args.out} --all")

    return cli.run(_main)


if __name__ == "__main__":
    raise SystemExit(main())
