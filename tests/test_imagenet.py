"""ImageNet as users have it: the official tars, prepared by TFDS's own imagenet2012
builder (no mock, no network), trained on with the paper recipe, stopped and resumed,
evaluated on ten crops, exported and served; the folder layout made from the same tars
agrees with TFDS on classes and labels. The checks of the manual folder, the disk and
the class names run in the fast tier."""

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from helpers import PAPER, ROOT, train_command

from alexnet_tf import data as data_lib
from alexnet_tf.config import DataConfig
from alexnet_tf.data import records
from alexnet_tf.runfolder import RunFolder

tfds = pytest.importorskip("tensorflow_datasets")

VAL_IMAGES = 4  # ILSVRC2012_val_00000001..04 (see `val_labels`)
TRAIN_PER_CLASS = 2
SIZES = ((375, 500), (333, 500), (500, 375))  # (height, width): ImageNet's commonest
# Entries of the class index Keras ships for its ImageNet models (imagenet_class_index.json:
# index -> [synset, name]), spread over the 1000 classes; 701 and 702 are neighbours.
KERAS_CLASS_INDEX = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    207: ("n02099601", "golden retriever"),
    281: ("n02123045", "tabby"),
    409: ("n02708093", "analog clock"),
    701: ("n03888257", "parachute"),
    702: ("n03888605", "parallel bars"),
    905: ("n04590129", "window shade"),
    945: ("n07720875", "bell pepper"),
    999: ("n15075141", "toilet tissue"),
}


def tfds_list(name):
    with open(tfds.core.tfds_path(f"datasets/imagenet2012/{name}")) as f:
        return f.read().split()


def val_labels():
    """The synsets of ILSVRC2012_val_00000001.. from TFDS's own list. TFDS pairs the sorted
    names in the val tar with this list line by line, so a tiny val tar holds the first
    names (any other choice would get other images' labels)."""
    return tfds_list("validation_labels.txt")[:VAL_IMAGES]


def jpeg(rng, height, width):
    from PIL import Image

    x = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(x).resize((width, height), Image.BICUBIC).save(out, "JPEG", quality=90)
    return out.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tiny_imagenet(tars):
    """TARS/ILSVRC2012_img_train.tar (one tar per synset, n01751748_123.JPEG, ...) and
    TARS/ILSVRC2012_img_val.tar as image-net.org ships them, real JPEGs of ImageNet's
    sizes; returns {file name: (jpeg, synset)}."""
    rng = np.random.default_rng(0)
    images = {}
    with tarfile.open(os.path.join(tars, records.IMAGENET_TARS[0]), "w") as train:
        for synset in sorted(set(val_labels())):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                for i in range(TRAIN_PER_CLASS):
                    name = f"{synset}_{123 + 17 * i}.JPEG"
                    images[name] = (jpeg(rng, *SIZES[len(images) % len(SIZES)]), synset)
                    add(t, name, images[name][0])
            add(train, f"{synset}.tar", inner.getvalue())
    with tarfile.open(os.path.join(tars, records.IMAGENET_TARS[1]), "w") as val:
        for i, synset in enumerate(val_labels()):
            name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
            images[name] = (jpeg(rng, *SIZES[len(images) % len(SIZES)]), synset)
            add(val, name, images[name][0])
    return images


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    """(TARS, images) of `write_tiny_imagenet`."""
    tars = str(tmp_path_factory.mktemp("tars"))
    return tars, write_tiny_imagenet(tars)


def command(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ---------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_official_tars_to_training_evaluation_and_a_served_synset(tiny_imagenet, tmp_path):
    """One command from the tars to training (the estimate said before TFDS prepares),
    SIGTERM and resume, 10-crop evaluation, export, and a REST answer naming synsets."""
    tars, images = tiny_imagenet
    data_dir, workdir, export_dir = str(tmp_path / "tfds"), str(tmp_path / "run"), str(tmp_path / "export")
    sets = {
        "train.batch_size": 2,
        "train.epochs": 1,
        "compute.steps_per_loop": 1,  # SIGTERM stops the run after its first step
        "data.eval_examples": VAL_IMAGES,
        "data.tfds_data_dir": data_dir,
        "data.tfds_manual_dir": tars,
    }
    proc = train_command(workdir, sets.items(), recipe=PAPER, data="tfds:imagenet2012")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("training "):  # the run has started: its first host call is next
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 75 and "SIGTERM at step" in out, out

    # the estimate came before TFDS started, and its disk figure is what TFDS then wrote
    estimate = next(i for i, line in enumerate(seen) if line.startswith("TFDS prepares imagenet2012 once"))
    assert estimate < next(i for i, line in enumerate(seen) if "Downloading and preparing dataset" in line)
    disk = float(re.search(r"Estimate: .*? and ([\d.]+) MB of disk", seen[estimate + 1])[1]) * 1e6
    assert abs(disk - du(os.path.join(data_dir, "imagenet2012"))) < 0.05 * disk

    stopped = int(re.search(r"SIGTERM at step (\d+)", out)[1])
    assert stopped == 1
    proc = train_command(workdir, sets.items(), recipe=PAPER, data="tfds:imagenet2012")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert f"at step {stopped}" in out and "TFDS prepares" not in out  # prepared once
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["step"] == (len(images) - VAL_IMAGES) // 2 > stopped  # one epoch at batch 2
    assert [h["epoch"] for h in results["history"]] == [1]
    classes = json.load(open(os.path.join(workdir, "classes.json")))
    assert len(classes) == 1000 and classes[0] == ["n01440764", "tench, Tinca tinca"]

    # the run folder alone: its own data (TFDS's folder included) and validation split
    out = command("alexnet_tf.evaluate", "--workdir", workdir, "--crops", "ten", "--out", str(tmp_path / "eval"))
    with open(tmp_path / "eval" / "evaluation.json") as f:
        evaluated = json.load(f)
    assert evaluated["crops"] == "ten" and evaluated["examples"] == VAL_IMAGES, out

    command("alexnet_tf.export", "--workdir", workdir, "--out", os.path.join(export_dir, "1"))
    answer = predict(export_dir, images["ILSVRC2012_val_00000001.JPEG"][0])
    synsets, names = tfds_list("labels.txt"), records.imagenet_class_descriptions(tfds_list("labels.txt"))
    assert answer["class_names"] == [synsets[i] for i in answer["classes"]]
    assert answer["class_descriptions"] == [names[i] for i in answer["classes"]]
    assert len(answer["classes"]) == 5 and all(re.fullmatch(r"n\d{8}", s) for s in answer["class_names"])


def predict(export_dir, jpeg_bytes):
    """One REST predict through `python -m alexnet_tf.serve` on the export."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "alexnet_tf.serve", export_dir, "--port", "0", "--quiet"]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = server.stdout.readline()
        port = re.search(r"http://127\.0\.0\.1:(\d+)/v1/models/alexnet", line)
        assert port, line
        conn = http.client.HTTPConnection("127.0.0.1", int(port[1]), timeout=120)
        body = {"instances": [{"b64": base64.b64encode(jpeg_bytes).decode()}]}
        conn.request("POST", "/v1/models/alexnet:predict", body=json.dumps(body))
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer["predictions"][0]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_folder_made_from_the_tars_agrees_with_tfds(tiny_imagenet, tmp_path):
    """The tars unpacked as users do (train/<synset>/ from each synset's tar, a flat val/
    labelled by Kaggle's LOC_val_solution.csv) give TFDS's class order and, image by
    image, TFDS's label: the synset in a training file's name, and for val image k line
    k of TFDS's validation-label list."""
    tars, images = tiny_imagenet
    root = tmp_path / "imagenet"
    synsets = tfds_list("labels.txt")
    for synset in synsets:  # all 1000 class folders, as the full train tar gives
        os.makedirs(root / "train" / synset)
    with tarfile.open(os.path.join(tars, records.IMAGENET_TARS[0])) as train:
        for member in train:
            with tarfile.open(fileobj=train.extractfile(member)) as inner:
                inner.extractall(root / "train" / member.name[: -len(".tar")], filter="data")
    with tarfile.open(os.path.join(tars, records.IMAGENET_TARS[1])) as val:
        val.extractall(root / "val", filter="data")
    with open(root / "LOC_val_solution.csv", "w") as f:
        f.write("ImageId,PredictionString\n")
        for k, synset in enumerate(val_labels(), 1):
            f.write(f"ILSVRC2012_val_{k:08d},{synset} 12 30 140 170 \n")

    config = DataConfig(tfds_data_dir=str(tmp_path / "tfds"), tfds_manual_dir=tars)
    from_tfds = data_lib.open_source("tfds:imagenet2012", config)
    from_folder = data_lib.open_source(f"folder:{root}")
    assert from_folder.class_names == from_tfds.class_names == synsets

    def labels(source, split):
        out = {}
        for _, data, label, name in source.examples(split).as_numpy_iterator():
            out[os.path.basename(name.decode())] = (int(label), data)
        return out

    want = {name: synsets.index(synset) for name, (_, synset) in images.items()}
    for split in ("train", "validation"):
        got_tfds, got_folder = labels(from_tfds, split), labels(from_folder, split)
        assert {n: y for n, (y, _) in got_tfds.items()} == {n: y for n, (y, _) in got_folder.items()}
        assert {n: y for n, (y, _) in got_tfds.items()} == {n: want[n] for n in got_tfds}
        assert all(got_tfds[n][1] == images[n][0] == got_folder[n][1] for n in got_tfds)  # bytes as shipped
    assert sum(from_tfds.sizes[s] for s in ("train", "validation")) == len(images)


# ---------------------------------------------------------------- the manual folder, the disk (fast)
def test_missing_tars_name_the_folder_tfds_reads(tmp_path):
    # No manual folder set: TFDS's own default, <data_dir>/downloads/manual.
    with pytest.raises(data_lib.DataError) as e:
        data_lib.open_source("tfds:imagenet2012", DataConfig(tfds_data_dir=str(tmp_path)))
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    assert f"in {manual}, where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar are missing" in str(e.value)
    builder = tfds.builder("imagenet2012", data_dir=str(tmp_path))
    # the folder TFDS's own download manager would read (a private method: pins the default)
    assert records.tfds_manual_dir(builder) == os.fspath(
        builder._make_download_manager(None, tfds.download.DownloadConfig())._manual_dir
    )
    # data.tfds_manual_dir, with one tar there
    tars = tmp_path / "tars"
    tars.mkdir()
    (tars / "ILSVRC2012_img_val.tar").write_bytes(b"")
    config = DataConfig(tfds_data_dir=str(tmp_path), tfds_manual_dir=str(tars))
    with pytest.raises(data_lib.DataError, match=re.escape(f"in {tars}, where ILSVRC2012_img_train.tar is missing")):
        data_lib.open_source("tfds:imagenet2012", config)
    assert not os.path.exists(tmp_path / "imagenet2012")


def test_too_little_disk_is_refused_before_tfds_starts(tmp_path):
    # Sparse tars of 4 TB each: more than this disk holds; nothing is prepared.
    tars = tmp_path / "tars"
    tars.mkdir()
    for name in records.IMAGENET_TARS:
        with open(tars / name, "wb") as f:
            f.truncate(4 * 10**12)
    config = DataConfig(tfds_data_dir=str(tmp_path / "tfds"), tfds_manual_dir=str(tars))
    with pytest.raises(data_lib.DataError, match=r"needs about 79\d\d\.\d GB in .* GB are free there"):
        data_lib.open_source("tfds:imagenet2012", config)
    assert not os.path.exists(tmp_path / "tfds" / "imagenet2012")


# ---------------------------------------------------------------- class names (fast)
def test_imagenet_synsets_get_their_readable_names():
    synsets = tfds_list("labels.txt")
    names = records.imagenet_class_descriptions(synsets)
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca"
    assert {i: (synsets[i], names[i].split(",")[0]) for i in KERAS_CLASS_INDEX} == KERAS_CLASS_INDEX
    # a subset of the synsets (a folder of some classes), in any order
    subset = [synset for synset, _ in KERAS_CLASS_INDEX.values()][::-1]
    assert records.imagenet_class_descriptions(subset) == [names[synsets.index(s)] for s in subset]
    assert records.imagenet_class_descriptions(["cat", "dog"]) is None
    assert records.imagenet_class_descriptions(["n01440764", "n00000000"]) is None  # not an ImageNet class


def test_classes_json_keeps_synsets_with_names_beside(tmp_path):
    RunFolder(tmp_path).write_classes(["n03888257", "n01440764"])
    assert json.load(open(tmp_path / "classes.json")) == [
        ["n03888257", "parachute, chute"],
        ["n01440764", "tench, Tinca tinca"],
    ]
    assert RunFolder(tmp_path).read_classes(2) == (
        ["n03888257", "n01440764"],
        ["parachute, chute", "tench, Tinca tinca"],
    )
    RunFolder(tmp_path).write_classes(["cat", "dog"])
    assert json.load(open(tmp_path / "classes.json")) == ["cat", "dog"]
    assert RunFolder(tmp_path).read_classes(2) == (["cat", "dog"], None)
    with open(tmp_path / "classes.json", "w") as f:  # a run written before names were kept
        json.dump(["n01440764"], f)
    assert RunFolder(tmp_path).read_classes(1) == (["n01440764"], ["tench, Tinca tinca"])
