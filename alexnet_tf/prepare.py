"""Writes a dataset as JPEG TFRecord shards of the paper's 256x256 images (Sec. 2).

    python -m alexnet_tf.prepare --data SPEC --out DIR [--size 256] [--shard-size 1024]

SPEC is a data spec (folder:PATH, tfds:NAME, ...) or a plain folder path. Every image is
rescaled so its shorter side is 256 and its central 256x256 patch kept, then stored as a
JPEG with its label and file name; OUT/metadata.json holds the class names and each
shard's split and example count, which `--data tfrecord:DIR` reads. Training then
decodes only the crop it needs (decode_and_crop_jpeg), the fastest input there is.

The files of a folder are written in a fixed random order (the same in every run), so
that every shard holds every class and a training stream that reads a few shards at a
time is not a few classes at a time; other sources are written in their own order
(TFDS shuffles ImageNet's examples when it builds them). Each split is decoded in one
pass. Shards are written one at a time to a temporary name and renamed when complete,
so an interrupted run started again skips the finished shards without decoding their
images again. Files that cannot be decoded are skipped and listed at the end (and in
metadata.json).
"""

from __future__ import annotations

from alexnet_tf import cli
from alexnet_tf.config import Config, override


def main(argv=None) -> int:
    p = cli.parser("prepare", __doc__)
    cli.add_data(p)
    p.set_defaults(data=None)
    p.add_argument("--size", type=int, default=256, help="side of the stored square images (Sec. 2: 256)")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored images")
    cli.add_out(p, "folder for the shards and metadata.json (an interrupted run there resumes)")
    cli.add_overrides(p)  # data.label_file, data.tfds_data_dir, data.tfds_manual_dir
    return cli.main(p, _main, argv)


def _main(data: str | None, size: int, shard_size: int, quality: int, out: str, overrides: list[str]) -> None:
    # TensorFlow: loaded once the arguments parse
    from alexnet_tf import data as data_lib
    from alexnet_tf.shards import prepare

    if not data:
        raise data_lib.DataError("give --data SPEC (folder:PATH, tfds:NAME[:SPLIT], ...) to prepare")
    report = prepare(data, out, size, shard_size, quality, data=override(Config(), overrides).data)
    total = sum(report["written"].values())
    print(
        f"wrote {total} images ({', '.join(f'{k} {v}' for k, v in report['written'].items())}) to {out}; "
        f"{report['resumed_shards']} shard(s) were already finished"
    )
    if report["skipped"]:
        print(f"skipped {report['skipped']} unreadable file(s) (listed in {out}/metadata.json):")
        for e in report["skipped_files"][:10]:
            print(f"  {e['file']}: {e['reason']}")
    print(f"train with: --data tfrecord:{out}")


if __name__ == "__main__":
    cli.program(main)
