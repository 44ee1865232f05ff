"""Typed, frozen configuration trees, recipe loading and `--set` overrides.

A recipe is a Python file with a `get_config()` function returning a `Config`. Variants
import a base recipe and change fields with `dataclasses.replace` or `override`.
Every field carries a default equal to the paper's value where the paper gives one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import sys
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A recipe or an override that cannot be used; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (Sec. 2 and 4.1)."""

    # a data spec, e.g. folder:PATH; the kinds: alexnet_tf.data.specs.SOURCES (`--data` in any command's -h)
    source: str = "tfds:imagenet2012"
    train_split: str = "train"
    eval_split: str = "validation"  # "" = the source's own: validation, val or test, the first it has
    resize_size: int = 256  # Sec. 2: shorter side to 256, then the central 256x256 patch
    # Sec. 2: "shorter_side" rescales the shorter side to resize_size and takes the central
    # square; "warp" rescales both sides to resize_size, ignoring the aspect ratio, as Caffe's
    # ImageNet data were made (convert_imageset --resize_height=256 --resize_width=256)
    resize: Literal["shorter_side", "warp"] = "shorter_side"
    crop_size: int = 227  # Sec. 4.1 says 224; 227 is what gives 55x55 after conv1
    pad_crop: int = 0  # >0: take crops of this size and zero-pad to crop_size (224 + 3)
    random_flip: bool = True  # Sec. 4.1: horizontal reflections
    pca_noise_std: float = 0.1  # Sec. 4.1: alpha ~ N(0, 0.1) per image
    subtract_mean: bool = True  # Sec. 2: subtract the mean activity over the training set
    # multiplies the centred pixels (0..255 scale) the net sees; Sec. 2 feeds them as they
    # are (1.0); about 1/64 gives them unit spread, as model.init="fan_in" expects
    input_scale: float = 1.0
    # the order of the colour channels the net takes: RGB here; nets trained in Caffe take
    # BGR (OpenCV's order). The mean image and the colour noise stay RGB: the swap is the
    # last step of data.device_preprocess
    channel_order: Literal["rgb", "bgr"] = "rgb"
    stats_path: str = ""  # .npz from `python -m alexnet_tf.stats`; "" = dataset or ImageNet
    shuffle_buffer: int = 10_000
    service_address: str = ""  # tf.data service dispatcher, e.g. grpc://host:5000
    eval_examples: int = 0  # 0 = the whole eval split
    random_labels: bool = False  # control run: train on random labels (must stay at chance)
    label_file: str = ""  # folder sources: labels of a flat val/ folder; "" = look in the folder
    tfds_data_dir: str = ""  # tfds sources: "" = TFDS's default (~/tensorflow_datasets)
    tfds_manual_dir: str = ""  # tfds sources: where ILSVRC2012_img_*.tar are; "" = <data_dir>/downloads/manual
    deterministic: bool = True  # same batches in the same order every run; False lets tf.data reorder for speed


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network of Sec. 3 and Fig. 2, with the paper's ablations as switches."""

    num_classes: int = 1000  # ILSVRC; 0 = the data's class count
    input_size: int = 227  # Sec. 3.5 / Fig. 2 (see DataConfig.crop_size)
    width: float = 1.0  # multiplies every conv and fc width; 1.0 is the paper's net
    two_columns: bool = True  # Sec. 3.2; False = one column with half the kernels
    lrn: bool = True  # Sec. 3.3
    lrn_convention: Literal["paper", "cuda-convnet", "caffe"] = "paper"  # see model.LocalResponseNormalization
    # Which maps the LRN window of conv1 and conv2 spans in the two-column net: "column",
    # each column's own (it stops at the column's edge: the columns do not talk there,
    # Sec. 3.2; cuda-convnet's two-GPU layers); "layer", all the layer's maps (Sec. 3.3's
    # "N is the total number of kernels in the layer"; Caffe's bvlc_alexnet).
    # recipes/paper.py gives the reason for its choice
    lrn_scope: Literal["column", "layer"] = "column"
    lrn_size: int = 5  # Sec. 3.3: n = 5
    lrn_alpha: float = 1e-4  # Sec. 3.3
    lrn_beta: float = 0.75  # Sec. 3.3
    overlap_pooling: bool = True  # Sec. 3.4: s=2, z=3; False = s=2, z=2
    activation: Literal["relu", "tanh"] = "relu"  # Sec. 3.1; "tanh" for the Fig. 1 comparison
    dropout: float = 0.5  # Sec. 4.2: p = 0.5 in "the first two fully-connected layers"
    # Sec. 4.2 zeroes the outputs of fc6 and fc7 ("outputs", Caffe's drop6/drop7);
    # "inputs" drops the inputs of fc6 and fc7 instead, as torchvision's AlexNet does
    dropout_placement: Literal["outputs", "inputs"] = "outputs"
    # Sec. 4.2: in training each unit is zeroed with probability p and the others pass
    # unchanged; at test every unit is kept and "multiplied by 0.5" ("paper"). "inverted"
    # divides the kept units by 1 - p in training and leaves test untouched (Keras',
    # PyTorch's and Caffe's dropout): the same test-time net, a different training (the
    # layers after fc6 and fc7 see twice the signal, as with weights of twice the spread)
    dropout_form: Literal["paper", "inverted"] = "paper"
    # Sec. 5: weights ~ N(0, 0.01) ("paper"); "fan_in": N(0, 2 / fan-in) per layer (He et
    # al. 2015), which keeps the signal's scale through every layer and starts learning
    # on data where the paper's init sits at chance for many epochs
    init: Literal["paper", "fan_in"] = "paper"
    init_std: float = 0.01  # Sec. 5, for init="paper"
    bias_one: bool = True  # Sec. 5: biases 1 in conv2, conv4, conv5, fc6, fc7


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Stochastic gradient descent as in Sec. 5."""

    lr: float = 0.01  # Sec. 5
    momentum: float = 0.9  # Sec. 5
    weight_decay: float = 5e-4  # Sec. 5, inside the momentum update
    decay_biases: bool = False  # Sec. 5 writes the rule for weights; biases get none
    schedule: Literal["plateau", "step", "constant"] = "plateau"  # plateau (Sec. 5) | step | constant
    lr_factor: float = 0.1  # Sec. 5: divide by 10
    max_reductions: int = 3  # Sec. 5: "reduced three times prior to termination"
    plateau_patience: int = 2  # epochs without improvement before a reduction
    plateau_threshold: float = 1e-3  # smaller improvements of eval top-1 error do not count
    # Sec. 5 cuts when the error "stopped improving with the current learning rate",
    # which presupposes that it was improving: no epoch counts until the error has
    # fallen this far below its first value (a net still at chance is not on a plateau;
    # 0.02 is 3x the sampling noise of 2,000 images at chance), nor after a cut until
    # it has improved at the new rate
    plateau_start_drop: float = 0.02
    plateau_cooldown: int = 0  # epochs after a cut that do not count (Keras' ReduceLROnPlateau cooldown)
    # a deadline for Sec. 5's `max_reductions` cuts, so that all fall within `train.epochs`
    # (Sec. 5: "reduced three times prior to termination") whatever the validation error
    # does: the epochs left always hold the cuts still to come at this many epochs each,
    # so cut k of K falls at the latest after epoch epochs - (K - k + 1) * this (57, 68, 79
    # of the paper's 90) and the last rate runs at least this many epochs. It holds no cut
    # back: a plateau cuts whenever the error stops improving, also after epochs 4, 7 and
    # 10 (Sec. 5 sets no time per rate). 0 = train.epochs // (2 * (max_reductions + 1)) (11
    # of 90); "off" = no deadline, Sec. 5's rule alone (a run may end with fewer cuts)
    plateau_min_epochs: int | Literal["off"] = 0
    step_epochs: tuple = ()  # for schedule=step: epochs at which lr *= lr_factor
    scale_lr: bool = True  # lr * global_batch / 128 when the batch differs from Sec. 5's


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # Sec. 5, global batch
    epochs: int = 90  # Sec. 5: "roughly 90 cycles"
    max_steps: int = 0  # stop after this many steps; 0 = no limit
    eval_batch_size: int = 0  # 0 = batch_size
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    # float32 matmuls and convolutions as TF32 (10-bit mantissa) on Ampere and newer GPUs,
    # TensorFlow's default there; off, float32 is float32 (Sec. 5 trained in float32)
    tf32: bool = False
    log_every: int = 100  # steps between console lines and scalars
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = 3
    seed: int = 0
    deterministic: bool = False  # op determinism and fixed seeds for data and dropout


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How the net and its step are computed, never what they compute: every setting here
    gives the same numbers (to float rounding) at a different speed, so none is a paper
    setting, none binds a resumed run (a run may resume on another kind of device) and a
    fine-tuned run picks its own. "auto" leaves the choice to alexnet_tf.forms' table for
    the device and precision; the choice goes into the run's `Runtime`, never back into
    the config.

    What changes the numbers a run computes stays with the experiment: train.precision
    (bfloat16 rounds every activation), train.tf32 (a 10-bit mantissa in float32 matmuls
    and convolutions), train.deterministic (whether a rerun gives the same numbers),
    data.deterministic (the order of the examples), and the strategy and devices.
    """

    # conv2/4/5's two groups: grouped (one Conv2D with groups=2) | split (two convs + concat)
    conv_form: Literal["auto", "grouped", "split"] = "auto"
    # the LRN's window sum: ops (5 shifted slices) | matmul (a band matrix) | tf_op
    # (tf.nn.local_response_normalization); see model.LocalResponseNormalization
    lrn_impl: Literal["auto", "ops", "matmul", "tf_op"] = "auto"
    # Sec. 5's momentum step: keras (Keras' SGD ops) | fused (one kernel per variable, optim.FusedSGD)
    update_op: Literal["auto", "keras", "fused"] = "auto"
    # XLA for the step: True | False | "auto" (on for GPUs, off on CPUs, where TensorFlow's
    # oneDNN kernels outrun XLA's convolutions)
    jit_compile: bool | Literal["auto"] = "auto"
    # the SGD update in the same XLA program as forward/backward; one device only
    # (MirroredStrategy needs it outside, see alexnet_tf.steps.make_train_loop)
    fused_update: bool = True
    # training steps per host call; calls end at log, checkpoint and epoch ends, so the
    # steps are the same whatever the number
    steps_per_loop: int = 1
    profile_steps: tuple = ()  # (first, last): write a profiler trace of these steps to tb/


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    # auto | one_device | mirrored | multi_worker | columns (Sec. 3.2: column A on one
    # device, column B on the other; model parallel, see alexnet_tf.columns)
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker", "columns"] = "auto"
    devices: str = ""  # "" = all local GPUs; "cpu:2" = two logical CPUs; or "gpu:0,gpu:1"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Starting from a trained net instead of Sec. 5's initialisation (not in the paper:
    for new classes or new data, see recipes/finetune.py)."""

    init_from: str = ""  # a run folder, a checkpoint in one, or a .caffemodel; "" = Sec. 5's init
    new_layers: tuple = ("fc8",)  # drawn afresh with the recipe's init instead of copied (new classes)
    freeze: tuple = ()  # layers that keep the loaded weights, e.g. ("conv1", "conv2", "conv3", "conv4", "conv5")
    lr_factor: float = 1.0  # the copied layers learn at lr_factor * optim.lr; the new ones at optim.lr


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    distribute: DistributeConfig = DistributeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    compute: ComputeConfig = ComputeConfig()


# Keys that moved into the compute section; a run's config.json written before carries
# them in their old place (from_dict moves them), an old `--set` of one is refused.
MOVED = {
    "model.conv_form": "compute.conv_form",
    "model.lrn_impl": "compute.lrn_impl",
    "optim.update_op": "compute.update_op",
    "train.jit_compile": "compute.jit_compile",
    "train.fused_update": "compute.fused_update",
    "train.steps_per_loop": "compute.steps_per_loop",
    "train.profile_steps": "compute.profile_steps",
}


def validate(config: Config) -> Config:
    """Raises ConfigError for a field outside its choices or an impossible combination."""
    for section in dataclasses.fields(config):
        node = getattr(config, section.name)
        hints = typing.get_type_hints(type(node))
        for f in dataclasses.fields(node):
            _coerce(f"{section.name}.{f.name}", hints[f.name], getattr(node, f.name))
    if config.train.batch_size <= 0:
        raise ConfigError("train.batch_size must be positive")
    if config.model.input_size != config.data.crop_size:
        raise ConfigError(
            f"model.input_size={config.model.input_size} but data.crop_size={config.data.crop_size}; "
            "set both to the same size"
        )
    if config.data.crop_size > config.data.resize_size:
        raise ConfigError("data.crop_size must not exceed data.resize_size")
    if config.distribute.strategy == "columns":  # Sec. 3.2's placement, see alexnet_tf.columns
        if not config.model.two_columns:
            raise ConfigError("distribute.strategy=columns places the two columns: it needs model.two_columns=True")
        if config.compute.jit_compile is True:
            raise ConfigError(
                "distribute.strategy=columns runs on two devices, which one XLA cluster cannot span: "
                "set compute.jit_compile=False"
            )
        if config.compute.update_op == "keras":
            raise ConfigError(
                "distribute.strategy=columns updates each column's weights on its own device with the fused "
                "kernel (Keras' update ops would run on the first): set compute.update_op=fused or auto"
            )
    if config.finetune.lr_factor < 0:
        raise ConfigError("finetune.lr_factor must not be negative")
    if config.optim.plateau_min_epochs != "off" and config.optim.plateau_min_epochs < 0:
        raise ConfigError(
            "optim.plateau_min_epochs must not be negative (0: train.epochs // (2 * (max_reductions + 1)); "
            "off: no deadline)"
        )
    if config.train.deterministic and config.compute.jit_compile is True:
        raise ConfigError(
            "train.deterministic=True needs compute.jit_compile=False: XLA has no deterministic "
            "max-pooling gradient (TensorFlow refuses it at the first step)"
        )
    if config.compute.steps_per_loop < 1:
        raise ConfigError("compute.steps_per_loop must be at least 1")
    return config


def to_dict(config: Any) -> dict:
    """The config tree as plain JSON-able dicts."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, values: dict) -> Any:
    """Rebuilds a config tree from `to_dict` output (e.g. a run's config.json); for a
    `Config`, the keys of one written before the compute section (MOVED) taken from
    their old place."""
    if cls is Config:
        values = _migrate(values)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = from_dict(kind, v)
        else:
            kwargs[f.name] = _coerce(f.name, kind, v)
    return cls(**kwargs)


def _migrate(values: dict) -> dict:
    """`values` with every MOVED key moved from its old section to its new one (where
    the new one does not already hold it)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for old, new in MOVED.items():
        (section, key), (new_section, new_key) = old.split("."), new.split(".")
        if isinstance(values.get(section), dict) and key in values[section]:
            value = values[section].pop(key)
            values.setdefault(new_section, {}).setdefault(new_key, value)
    return values


def recipe_folder() -> str:
    """The folder of the shipped recipes: alexnet_tf/recipes/ in an installed wheel (setup.py
    puts the checkout's recipes/ there), else recipes/ beside the package (a checkout, or an
    editable install of one)."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "recipes")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "recipes")


def find_recipe(path: str | os.PathLike) -> str:
    """The file `load_recipe(path)` imports: `path` itself if it is a file; otherwise, for a
    bare name or a name under recipes/, the shipped recipe of that file name, so that
    `recipes/quickstart.py`, `quickstart.py` and `quickstart` work from any folder."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    folder = recipe_folder()
    files = os.listdir(folder) if os.path.isdir(folder) else []
    shipped = sorted(f[:-3] for f in files if f.endswith(".py") and not f.startswith("_"))
    where, name = os.path.split(os.path.normpath(path))
    stem = name[:-3] if name.endswith(".py") else name
    if where in ("", "recipes") and stem in shipped:
        return os.path.join(folder, stem + ".py")
    raise ConfigError(
        f"recipe {path!r} not found; give a recipe file or a shipped recipe: {', '.join(shipped)} (in {folder})"
    )


def load_recipe(path: str | os.PathLike) -> Config:
    """Imports a recipe file, or a shipped recipe by name (see `find_recipe`), and returns
    its `get_config()`, validated."""
    return validate(import_recipe(path))


def import_recipe(path: str | os.PathLike) -> Config:
    """A recipe's `get_config()` as `load_recipe` finds it, not yet validated (a run
    validates its config once, with its overrides and data: `alexnet_tf.runconfig`)."""
    path = find_recipe(path)
    name = "alexnet_tf_recipe_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Variants import their base recipe by name (`from paper import get_config`).
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError("it has no get_config() function")
        config = module.get_config()
    except ConfigError as e:
        raise ConfigError(f"recipe {path!r}: {e}") from e
    except Exception as e:  # the recipe's own error, shown in one line
        # e.g. ModelConfig(conv_form=...) in a recipe written before the compute section
        moved = [f"{old} is now {new}" for old, new in MOVED.items() if f"'{old.split('.')[1]}'" in str(e)]
        hint = f" ({'; '.join(moved)})" if moved and isinstance(e, TypeError) else ""
        raise ConfigError(f"recipe {path!r} failed to load: {type(e).__name__}: {e}{hint}") from e
    finally:
        sys.path.remove(folder)
    if not isinstance(config, Config):
        raise ConfigError(f"recipe {path!r}: get_config() must return alexnet_tf.config.Config")
    return config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """Checks `value` against the field type `kind`, converting only where lossless (and
    the words true/false, as a shell writes them, to bools)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # e.g. bool | Literal["auto"]
        for option in typing.get_args(kind):
            try:
                return _coerce(key, option, value)
            except ConfigError:
                continue
        names = [repr(a) for o in typing.get_args(kind) for a in (typing.get_args(o) or [o.__name__])]
        raise ConfigError(f"{key}={value!r}; valid values: {', '.join(names)}")
    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if value in allowed and type(value) is type(allowed[0]):
            return value
        raise ConfigError(f"{key}={value!r}; valid values: {', '.join(map(str, allowed))}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        return value if isinstance(value, str) else str(value)
    elif kind is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (value,)
    raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r} ({type(value).__name__})")


def override(config: Config, assignments: list[str] | dict) -> Config:
    """Applies `a.b=value` overrides; the value is a Python literal or a plain string.
    Each key and the type of its value are checked here; the combination of the settings
    when the config is complete (`validate`: `load_recipe`, and a run's resolution)."""
    if isinstance(assignments, dict):
        items = list(assignments.items())
    else:
        items = []
        for a in assignments:
            if "=" not in a:
                raise ConfigError(f"override {a!r} is not of the form section.key=value")
            key, text = a.split("=", 1)
            items.append((key.strip(), _parse_value(text.strip())))
    for key, value in items:
        if key in MOVED:
            raise ConfigError(f"{key} is now {MOVED[key]} (how the net is computed, not what it is): set {MOVED[key]}")
        config = _set(config, key, value)
    return config


def _set(node: Any, dotted: str, value: Any, prefix: str = "") -> Any:
    head, _, rest = dotted.partition(".")
    names = [f.name for f in dataclasses.fields(node)]
    where = prefix.rstrip(".") or "the config"
    if head not in names:
        raise ConfigError(f"unknown key {prefix + head!r}; valid keys of {where}: {', '.join(names)}")
    hints = typing.get_type_hints(type(node))
    child = getattr(node, head)
    if dataclasses.is_dataclass(child):
        if not rest:
            raise ConfigError(
                f"{prefix + head!r} is a section; set one of its keys, e.g. {prefix + head}.{dataclasses.fields(child)[0].name}=..."
            )
        return dataclasses.replace(node, **{head: _set(child, rest, value, prefix + head + ".")})
    if rest:
        raise ConfigError(f"{prefix + head!r} is not a section; valid keys of {where}: {', '.join(names)}")
    return dataclasses.replace(node, **{head: _coerce(prefix + head, hints[head], value)})


# What a run's config.json written before a field existed stands for: runs trained before
# model.dropout_form existed used the inverted form; before model.lrn_scope, the LRN
# spanned the whole layer.
LEGACY_VALUES = {("model", "dropout_form"): "inverted", ("model", "lrn_scope"): "layer"}


def load_json(path: str) -> Config:
    """A run's config.json as a Config (fields it predates as LEGACY_VALUES says)."""
    with open(path) as f:
        values = json.load(f)
    for (section, key), value in LEGACY_VALUES.items():
        values.setdefault(section, {}).setdefault(key, value)
    return from_dict(Config, values)
