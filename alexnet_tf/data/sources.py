"""Where examples come from: one protocol, four kinds of source.

An example is (index, data, label, name): its fixed position in its split, its image
(encoded bytes, or uint8 pixels (H, W, 3) for in-memory arrays), its class index and a
string that names it (a file name, a tfds_id, ...). A `Source` hands out a split's
examples as `raw` elements, in a fixed order or in an order drawn from a seed, and says
how to turn them into examples: `parse` (at once for a whole batch; TFRecords stay
serialized until then) and `read` (per example, where it is decoded; a folder's files
are read there, so that a file that cannot be read is skipped like one that cannot be
decoded). `data.specs.open_source` makes one from a spec such as `folder:/data/imagenet`.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow as tf

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
BUILTIN_FASHION_MNIST = os.path.join(ASSETS, "fashion_mnist_subset.npz")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Label files looked for beside a flat validation folder (first found wins).
LABEL_FILES = ("val_labels.txt", "val.txt", "LOC_val_solution.csv")
REASONS = ("empty file", "not an image (unknown format)", "truncated or corrupt image", "cannot be read")


class DataError(RuntimeError):
    """A data source that cannot be read; the message says what to do."""


class Source:
    """A dataset with named splits; subclasses define `_raw` and, where they need to,
    `parse` and `read`.

    `name`, `class_names`, `sizes` ({split: examples}), `encoded` (data are image bytes
    rather than pixels), `aliases` ({other name: split}) and `shuffled` (`raw` with an
    order gives a random order of the whole split, so no shuffle buffer is needed).
    """

    shuffled = False

    def __init__(self, name: str, class_names: list, sizes: dict, encoded: bool, aliases: dict | None = None):
        self.name, self.class_names, self.encoded = name, list(class_names), encoded
        self.aliases = dict(aliases or {})
        self.sizes = {**sizes, **{a: sizes[t] for a, t in self.aliases.items()}}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> list:
        """Split names, aliases included."""
        return list(self.sizes)

    def check(self, split: str) -> str:
        """The split's own name (not an alias); DataError naming the splits if it has none such."""
        if split not in self.sizes:
            raise DataError(f"{self.name} has no split {split!r}; it has {', '.join(self.sizes)}")
        return self.aliases.get(split, split)

    def raw(self, split: str, order=None) -> tf.data.Dataset:
        """(index, raw) for every example of `split`: in its fixed order, or with `order`
        (ints, e.g. (seed, epoch)) in an order drawn from it."""
        return self._raw(self.check(split), order)

    def _raw(self, split: str, order) -> tf.data.Dataset:
        raise NotImplementedError

    def parse(self, raw):
        """(data, label, name) of raw elements, one or a batch."""
        return raw

    def read(self, data: tf.Tensor) -> tf.Tensor:
        """What is decoded: `data` itself, or the bytes of the file it names."""
        return data

    def why_unreadable(self, data: tf.Tensor) -> tf.Tensor:
        """Index into REASONS for `data` (any shape) that could not be read or decoded."""
        return _why_unreadable(data)

    def examples(self, split: str, order=None, read: bool = True) -> tf.data.Dataset:
        """(index, data, label, name) for every example of `split`; with `read=False` the
        data as `parse` gives it (for a folder, the file's path)."""

        def example(index, raw):
            data, label, name = self.parse(raw)
            return index, self.read(data) if read else data, label, name

        return self.raw(split, order).map(example, num_parallel_calls=tf.data.AUTOTUNE)


def _why_unreadable(data: tf.Tensor) -> tf.Tensor:
    """REASONS index of bytes that failed to decode (elementwise)."""
    head = tf.strings.substr(data, 0, 4)
    known = (
        tf.io.is_jpeg(data)
        | tf.equal(head, b"\x89PNG")
        | tf.equal(tf.strings.substr(data, 0, 3), b"GIF")
        | tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    )
    return tf.where(tf.equal(tf.strings.length(data), 0), 0, tf.where(known, 2, 1))


# --------------------------------------------------------------------------- arrays
class ArraySource(Source):
    """In-memory uint8 images {split: (images (N, H, W, 3), labels (N,))}; an example is
    named `NAME:SPLIT#INDEX`."""

    def __init__(self, name: str, class_names: list, arrays: dict):
        super().__init__(name, class_names, {s: len(y) for s, (_, y) in arrays.items()}, encoded=False)
        self.arrays = arrays

    def _raw(self, split, order):
        images, labels = self.arrays[split]
        prefix = f"{self.name}:{split}#"
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).enumerate()
        return ds.map(
            lambda i, ex: (i, (ex[0], ex[1], prefix + tf.strings.as_string(i))), num_parallel_calls=tf.data.AUTOTUNE
        )


def fashion_mnist_source(folder: str = "builtin") -> Source:
    """Fashion-MNIST, grey replicated to RGB; `builtin` is the subset shipped here."""
    arrays = _fashion_mnist_arrays(folder)
    rgb = {s: (np.repeat(arrays[f"{s}_images"][..., None], 3, -1), arrays[f"{s}_labels"]) for s in ("train", "test")}
    return ArraySource("fashion_mnist", [str(c) for c in arrays["class_names"]], rgb)


def _fashion_mnist_arrays(spec: str) -> dict:
    if spec == "builtin":
        with np.load(BUILTIN_FASHION_MNIST) as f:
            return {k: f[k] for k in f.files}
    folder = spec or DEBIAN_FASHION_MNIST
    files = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [f for f in files.values() if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}); "
            "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or put "
            "the four gzip files of the original release there"
        )
    out = {}
    for key, name in files.items():
        with gzip.open(os.path.join(folder, name)) as f:
            raw = f.read()
        if key.endswith("images"):
            out[key] = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        else:
            out[key] = np.frombuffer(raw, np.uint8, offset=8).astype(np.int32)
    with np.load(BUILTIN_FASHION_MNIST) as f:
        out["class_names"] = f["class_names"]
    return out


# --------------------------------------------------------------------------- files
class FileSource(Source):
    """Image files {split: (paths, labels)}; an example is named by its path. With an
    order, a split is a permutation of its whole file list (a shuffle buffer over a list
    sorted by class would mix only neighbouring classes)."""

    shuffled = True

    def __init__(self, name: str, class_names: list, files: dict, aliases: dict | None = None):
        self.files = {}
        for split, (paths, labels) in files.items():
            encoded = np.array([os.fsencode(p) for p in paths] or [b""], dtype=object)[: len(paths)]
            self.files[split] = (encoded, np.asarray(labels, np.int32))
        aliases = {a: t for a, t in (aliases or {}).items() if t in files and a not in files}
        super().__init__(name, class_names, {s: len(p) for s, (p, _) in self.files.items()}, True, aliases)

    def _raw(self, split, order):
        paths, labels = self.files[split]
        n = len(paths)
        index = np.arange(n, dtype=np.int64) if order is None else np.random.default_rng(order).permutation(n)
        return tf.data.Dataset.from_tensor_slices((index, (paths[index], labels[index])))

    def parse(self, raw):
        path, label = raw
        return path, label, path

    def read(self, data):
        return tf.io.read_file(data)

    def why_unreadable(self, data):
        def reasons(paths):  # read again here to tell a file that cannot be read from a bad one
            out = []
            for path in paths.numpy().ravel():
                try:
                    with open(path, "rb") as f:
                        out.append(int(_why_unreadable(tf.constant(f.read()))))
                except OSError:
                    out.append(REASONS.index("cannot be read"))
            return tf.constant(out, tf.int32)

        return tf.reshape(tf.py_function(reasons, [data], tf.int32), tf.shape(data))


def folder_source(path: str, label_file: str = "") -> Source:
    """`PATH/train/<class>/*` plus `PATH/val/<class>/*` (also `validation/`, `test/`), or a
    flat `PATH/val/*.JPEG` (ImageNet's layout) labelled by a file: `label_file`, else the
    first of PATH/val_labels.txt, PATH/val.txt, PATH/LOC_val_solution.csv found.

    Class names are the train folder names in sorted order (so label i is the i-th name).
    The split `val` is also reachable as `validation` (the DataConfig default).
    """
    if not os.path.isdir(path):
        raise DataError(f"folder {path!r} not found; expected {path}/train/<class>/*.JPEG and {path}/val/<class>/*")
    split_dirs = {
        s: os.path.join(path, s) for s in ("train", "val", "validation", "test") if os.path.isdir(os.path.join(path, s))
    }
    if "train" not in split_dirs:
        raise DataError(f"{path!r} has no train/ folder; expected {path}/train/<class>/*.JPEG")
    train = split_dirs["train"]
    class_names = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    if not class_names:
        raise DataError(f"{train!r} has no class folders")
    index = {c: i for i, c in enumerate(class_names)}
    files = {split: _split_files(path, split, d, index, label_file) for split, d in split_dirs.items()}
    return FileSource("folder:" + path, class_names, files, aliases={"validation": "val", "val": "validation"})


def _split_files(root: str, split: str, folder: str, index: dict, label_file: str) -> tuple:
    """(paths, labels) of one split folder: class folders, or (not train) a flat folder
    labelled by a label file."""
    flat = sorted(
        f
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )
    if split == "train" or not flat:
        paths, labels = [], []
        for c in sorted(os.listdir(folder)):
            if c in index:
                for f in sorted(os.listdir(os.path.join(folder, c))):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        paths.append(os.path.join(folder, c, f))
                        labels.append(index[c])
        return paths, labels
    candidates = [label_file] if label_file else [os.path.join(root, f) for f in LABEL_FILES]
    found = [c for c in candidates if c and os.path.isfile(c)]
    if not found:
        raise DataError(
            f"{folder} holds images directly; give their labels with data.label_file=FILE "
            f"(lines `FILE_NAME CLASS_FOLDER_NAME_OR_INDEX`) or put {LABEL_FILES[0]} in {root}"
        )
    by_name = _read_label_file(found[0], index)
    unlabelled = [f for f in flat if os.path.splitext(f)[0] not in by_name]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} files in {folder} have no label in {found[0]}, e.g. {unlabelled[0]}")
    return [os.path.join(folder, f) for f in flat], [by_name[os.path.splitext(f)[0]] for f in flat]


def _read_label_file(path: str, index: dict) -> dict:
    """file name (without folders) -> label index, from `NAME LABEL` lines or LOC_val_solution.csv.

    LABEL is a class folder name (e.g. a WordNet id n01440764) or a 0-based class index.
    """
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    csv = path.endswith(".csv")
    if csv and lines and lines[0].lower().startswith("imageid"):
        lines = lines[1:]
    labels = {}
    for n, line in enumerate(lines, 1):
        if csv:
            image_id, _, rest = line.partition(",")
            name, label = image_id, rest.split()[0] if rest.split() else ""
        else:
            parts = line.replace(",", " ").split()
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected `FILE LABEL`, got {line!r}")
            name, label = parts[0], parts[1]
        if label in index:
            y = index[label]
        elif label.isdigit() and int(label) < len(index):
            y = int(label)
        else:
            raise DataError(
                f"{path}:{n}: label {label!r} is neither a class folder name nor a class index below {len(index)}"
            )
        labels[os.path.splitext(os.path.basename(name))[0]] = y
    return labels
