"""The typed config of one training run.

Built in one fixed order: dataclass defaults -> YAML file -> `--set` overrides, then each key
validated, the defaults that depend on other keys (the task's loss and metrics) filled in, every
cross-field rule checked (`RULES`), and frozen: a typo fails here, before any data is read or any
epoch runs. Defaults and their documentation live here and nowhere else; the README's
configuration reference is generated from these classes (see `reference_markdown`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import yaml

from trainer.data import augment_spec, formats
from trainer.errors import UserError

PathList = Union[str, list[str]]


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose documentation travels with it."""
    if "default_factory" in kwargs:
        return field(default_factory=kwargs.pop("default_factory"), metadata={"doc": text, **kwargs})
    return field(default=kwargs.pop("default"), metadata={"doc": text, **kwargs})


@dataclass(frozen=True)
class DataConfig:
    format: str = _doc(f"Layout of the data: {formats.described()}.", default="shapes",
                       choices=formats.names())
    train: Optional[PathList] = _doc(
        "Training data: a path, glob or list of them (local, `gs://` or `/gcs/`). For "
        "`image_folder`, the folder holding one sub-directory per class.", default=None
    )
    val: Optional[PathList] = _doc(
        "Validation data. When missing, `validation_split` carves it out of `train`.", default=None
    )
    test: Optional[PathList] = _doc(
        "Test data. When missing, `test_split` carves it out of `train`.", default=None
    )
    train_rows: Optional[list[int]] = _doc(
        "`[start, stop)`: use only these rows of `train` (in file order), e.g. seed 002's "
        "`train_seeds` of one HDF5 file. Empty means all rows.", default=None
    )
    val_rows: Optional[list[int]] = _doc(
        "`[start, stop)` rows of `val` (or of `train`, when `val` is not given).", default=None
    )
    test_rows: Optional[list[int]] = _doc(
        "`[start, stop)` rows of `test` (or of `train`, when `test` is not given), e.g. seed "
        "002's `[train_seeds, train_seeds + test_seeds)`.", default=None
    )
    validation_split: float = _doc(
        "Fraction of `train` held out for validation when `val` is not given; 0: no validation "
        "split (early stopping and the best epoch then follow the training loss).",
        default=0.2, min=0.0, max=0.9,
    )
    test_split: float = _doc(
        "Fraction of `train` held out for testing when `test` is not given; 0: no test split "
        "(the final figures are then the validation split's, and say so).",
        default=0.1, min=0.0, max=0.9,
    )
    split_by: str = _doc(
        "How `validation_split` and `test_split` carve `train`: `sample` (rows at random) or "
        "`group` (whole groups at random, aiming at the fractions by sample count, so no video, "
        "session or seed is on both sides of an evaluation; needs a group per sample, see "
        "`group_key`).",
        default="sample", choices=("sample", "group"),
    )
    group_key: str = _doc(
        "The per-sample group (the video, session or simulation seed a sample came from): the "
        "array in `npz` shards, the feature in TFRecords, the column of a `csv` manifest, the "
        "dataset of an `hdf5` file. `npy` data takes it from `g*.npy` beside `x*.npy`; "
        "`trainer.convert --video` records each frame's video.",
        default="group",
    )
    standardize: bool = _doc(
        "Standardise inputs per channel with the training split's mean and std (one streaming "
        "pass before training). The statistics are stored inside the saved model, so prediction "
        "needs nothing else.",
        default=True,
    )
    standardize_targets: bool = _doc(
        "Regression: train on each target standardised with the training split's mean and std, "
        "so that targets on different scales are learnt alike (the loss is then unitless, over "
        "the standardised targets; `mape` and `msle`, already relative, stay in the targets' "
        "units). A last layer of the model (`targets`) maps its outputs back, so `model.h5`, "
        "`saved_model/`, `trainer.predict` and every metric but the loss are in the targets' "
        "own units. Ignored for classification.",
        default=True,
    )
    nonfinite: str = _doc(
        "What a NaN or Inf image value gets, in every split: `error` "
        "(stop with one line giving the counts, the split and the first file and row) or "
        "`zero` (replace it with 0, for data whose masked pixels are NaN, and log how many "
        "were replaced). The training split is counted whole before training; validation and "
        "test as they are read. `trainer.predict --nonfinite` does the same per input.",
        default="error", choices=("error", "zero"),
    )
    augment: list[Union[str, dict]] = _doc(
        "Random transforms of training batches, drawn anew each epoch from `train.seed`, in "
        "tf.data's threads; each a name (its default strength) or `name: strength` "
        "(docs/regularisation.md): " + augment_spec.described() + ".",
        default_factory=list, resume="recorded")
    image_size: Optional[list[int]] = _doc(
        "`[height, width]` that images from files (`image_folder`, `csv`, PNG TFRecords) are "
        "resized to; empty means the first image's size. Also the size of the generated `shapes` "
        "(empty: 32x32).", default=None, length=2, min=1, max=16384
    )
    color: str = _doc(
        "Channels of images from files: `grey` (1), `rgb` (3) or `auto` (as the first image).",
        default="auto", choices=("auto", "grey", "rgb"),
    )
    path_column: str = _doc("`csv`: the column holding file paths (relative to the CSV file, or "
                            "to `root`).", default="path")
    root: Optional[str] = _doc(
        "`csv`: the folder (local, `gs://` or `/gcs/`) that the manifest's paths are relative "
        "to and must stay inside, for a CSV kept apart from its images; empty means the CSV's "
        "own folder. Absolute paths and URLs are taken when they lie inside it.", default=None,
    )
    label_columns: list[str] = _doc(
        "`csv`: the label column, or several regression targets.",
        default_factory=lambda: ["label"],
    )
    channels: str = _doc(
        "Where the channel axis of array data (`npz`, `npy`, `hdf5`, raw TFRecords, `.npy` files "
        "of a `csv`) lies: `last` (N, H, W, C), as Keras and NumPy images; `first` (N, C, H, W), "
        "as PyTorch; `auto` takes an axis of size 1, 3 or 4 beside two larger ones as the "
        "channel axis and asks for this key where that is ambiguous. Image files are always "
        "channel-last.", default="auto", choices=("auto", "last", "first"),
    )
    target_names: Optional[list[str]] = _doc(
        "Regression: a name per target, in the order of the label columns (the report, "
        "`metrics.json` and `trainer.predict`'s CSV use them); empty means `label_columns` for "
        "a `csv` with several, else `target_0`, `target_1`, ...", default=None,
    )
    class_names: Optional[list[str]] = _doc(
        "Classification: a name per class, in the order of the sorted labels (e.g. "
        "`[no_touch, touch]` for labels 0 and 1); empty means the labels themselves.",
        default=None,
    )
    x_key: str = _doc("`hdf5`: the dataset of images; `npz`: the array of images (a file "
                      "without it but with `x_train`, `x_test`, as Keras's `mnist.npz`, is read "
                      "in that layout: `<x_key>_train`, and `<x_key>_test` as the test split).",
                      default="x")
    y_key: str = _doc("`hdf5`: the dataset of labels or targets; `npz`: the array of them "
                      "(`<y_key>_train`, `<y_key>_test` in Keras's layout).", default="y")
    shuffle_window: int = _doc(
        "Samples shuffled together: the pipeline reads this many samples (as random blocks from "
        "all shards), permutes them, and batches. Bounds the pipeline's memory.",
        default=16384, min=1, max=10_000_000, resume="recorded")
    shuffle_block: int = _doc(
        "Consecutive samples read in one piece. Smaller mixes better, larger reads faster "
        "(remote storage likes large reads).", default=1024, min=1, max=1_000_000,
        resume="recorded")
    read_threads: int = _doc(
        "Blocks read in parallel (file reads and image decoding). From a bucket each read waits "
        "out its latency: 16 threads of 4 MB blocks hide 30 ms per request "
        "(docs/performance.md, remote data).", default=16, min=1, max=256, resume="free")
    samples_per_class: int = _doc(
        "Number of generated `shapes` images per class.", default=400, min=1, max=1_000_000
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str = _doc(
        "A registered architecture (`contact_cnn`, `hexagonal_cnn`, `raccoon`, `penguin`, "
        "`shapes_cnn`, `blueprint_cnn`, `tiny_cnn`) or `package.module:function`, your own builder "
        "called as `function(input_shape, num_outputs, **params)`.",
        default="shapes_cnn",
    )
    dropout: Optional[float] = _doc(
        "Dropout rate of the dense layers; empty means the architecture's own default.",
        default=None, min=0.0, max=0.95,
    )
    layer_param: Optional[int] = _doc(
        "Width multiplier of `raccoon` and `penguin` (feature maps of the first layer).",
        default=None, min=1, max=512,
    )
    params: dict = _doc(
        "Extra keyword arguments passed to the builder (for your own `module:function`).",
        default_factory=dict,
    )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _doc(
        "Total epochs. A re-run of the same `name` continues from its last checkpoint up to this.",
        default=10, min=1, max=100_000, resume="recorded")
    batch_size: int = _doc(
        "Samples per batch on each replica; the global batch is this times the replicas in sync.",
        default=32, min=1, max=65_536, resume="recorded")
    learning_rate: float = _doc("Adam's learning rate.", default=1e-3, min=0.0, exclusive_min=True,
                                resume="recorded")
    seed: int = _doc(
        "Seed of the splits, shuffling, weight initialisation and dropout.", default=0, min=0,
        max=2**32 - 1,
    )
    deterministic: Union[str, bool] = _doc(
        "Deterministic TensorFlow ops, so that a run with the same seed repeats exactly and a "
        "resumed run matches an uninterrupted one bit for bit: `auto` (on the CPU, where they "
        "cost little; off on a GPU, where they force slower cuDNN algorithms), `true` or `false`.",
        default="auto", choices=("auto", True, False), resume="recorded")
    loss: Optional[str] = _doc(
        "Loss name; empty means the task's default (`sparse_categorical_crossentropy` for "
        "classification, `rmse` for regression). It must fit the task's labels: class indices "
        "for classification (the sparse cross-entropy), numbers for regression (`mse`, `mae`, "
        "`huber`, ...).",
        default=None,
    )
    metrics: Optional[list[str]] = _doc(
        "Metric names; empty means the task's default (`accuracy`, or `mse` and `mae`). Like "
        "`loss`, each must fit the task's labels (`accuracy`, `sparse_top_k_categorical_accuracy` "
        "for classification; `mse`, `mae`, `RootMeanSquaredError`, ... for regression).",
        default=None,
    )
    early_stopping_patience: Union[int, str] = _doc(
        "Stop after this many epochs without improvement of `monitor`; 0 turns it off. `auto` "
        "scales it with the run's length, `max(10, epochs // 4)`, so that a noisy validation "
        "loss does not stop a run early (the seeds used a fixed 5 to 8).",
        default="auto", min=0, max=100_000, words=("auto",), resume="recorded")
    lr_schedule: str = _doc(
        "How the learning rate moves: `constant` (the seeds' setting, and the best of the three "
        "on the seeds' sample tasks, whose runs are short; see docs/performance.md), `cosine` "
        "(a linear warm-up over the first epoch, at most a tenth of the run, then a cosine "
        "decay to zero at `epochs`), or `plateau` (divided by 5 after a third of the "
        "early-stopping patience, at least 1 epoch, 3 without early stopping, without "
        "improvement of `monitor`). `learning_rate` is the peak.",
        default="constant", choices=("constant", "cosine", "plateau"), resume="recorded")
    monitor: str = _doc(
        "The quantity for early stopping and best-model selection. Without a validation split "
        "(`validation_split: 0`) a `val_` quantity is replaced by its training twin (`val_loss` "
        "-> `loss`).", default="val_loss"
    )
    restore_best: bool = _doc(
        "Save the weights of the best epoch (by `monitor`) as `model.h5`, not the last epoch's.",
        default=True, resume="free")
    class_weight: str = _doc(
        "`balanced` weighs each class by the inverse of its frequency in the training split "
        "(for imbalanced classes); `none` weighs all alike.",
        default="none", choices=("none", "balanced"), resume="recorded")
    strategy: str = _doc(
        "tf.distribute strategy: `auto` (MirroredStrategy when several GPUs are present), "
        "`mirrored` or `default` (one device).",
        default="auto", choices=("auto", "mirrored", "default"), resume="free")
    mixed_precision: str = _doc(
        "`auto` (bfloat16 compute on Ampere and later GPUs and on CPUs with AMX-BF16 or "
        "AVX512-BF16, float16 on older GPUs with tensor cores, off elsewhere), `float16`, "
        "`bfloat16` or `off`. Outputs and loss stay float32; float16 uses loss scaling; the saved "
        "`model.h5` is float32 and loads on any machine.",
        default="auto", choices=("auto", "float16", "bfloat16", "off"),
    )
    jit_compile: Union[str, bool] = _doc(
        "XLA compilation: `auto` (on with a GPU, off on the CPU, where it is slower for these "
        "models), `true` or `false`.",
        default="auto", choices=("auto", True, False), resume="free")
    steps_per_execution: Union[int, str] = _doc(
        "Training steps per call into TensorFlow (Keras's `steps_per_execution`): fewer calls, "
        "less overhead per step. `auto` picks it from the step time the model's FLOPs and the "
        "device's measured peak predict, so that one call lasts about 0.2 s (at most 64 steps; "
        "1 with several workers, which must agree). "
        "Per-batch callbacks then run once per call: a preemption backup waits for the call to "
        "end and still lands on a batch boundary; at a call that ends an epoch the job stops after the "
        "epoch's checkpoint (any value, larger than an epoch too).",
        default="auto", min=1, max=10_000, words=("auto",), resume="free")
    scale_lr_with_replicas: bool = _doc(
        "Multiply `learning_rate` by the replicas in sync (the linear scaling rule), since the "
        "global batch is `batch_size` times the replicas.",
        default=False, resume="recorded")
    backup_every_steps: int = _doc(
        "Besides the backup saved when the job is preempted (SIGTERM), also back up the "
        "training state every so many steps, for machines that may die without warning; 0: "
        "only on preemption (a killed run then resumes from its last epoch).",
        default=0, min=0, max=10**12, resume="free")
    label_smoothing: float = _doc(
        "Classification: train towards `1 - s` on the true class and `s` spread evenly over all "
        "classes, instead of one-hot labels (0: off; `val_loss` is the smoothed loss too).",
        default=0.0, min=0.0, max=0.5, resume="recorded")
    ema: float = _doc(
        "An exponential moving average of the weights, updated every step with this momentum "
        "(e.g. 0.99 or 0.999; 0: off). Validation, the best epoch, the final figures and the "
        "saved model use the averaged weights; training goes on with its own; checkpoints "
        "keep both.", default=0.0, min=0.0, max=0.99999)
    histograms: bool = _doc(
        "Write weight and gradient histograms and per-layer activation statistics to TensorBoard "
        "every epoch (one extra forward and backward pass on a fixed training batch per epoch), "
        "and per-layer curves, the histograms as an image and as a GIF to plots/ and the report.",
        default=False, resume="free")

    def patience(self) -> int:
        """Early stopping's patience in epochs (0: off), `auto` resolved for this run's length."""
        if self.early_stopping_patience == "auto":
            return max(10, self.epochs // 4)
        return self.early_stopping_patience


@dataclass(frozen=True)
class OutputConfig:
    dir: str = _doc(
        "Where runs go; each run writes to `<dir>/<name>/`. Local path, `gs://` or `/gcs/`.",
        default="runs", resume="free")
    plots: bool = _doc("Write `plots/history.png`, `plots/architecture.png` and, for "
                       "classification, the confusion matrix.",
                       default=True, resume="free")
    report: bool = _doc(
        "Write `report.html` beside `model.h5`: one self-contained page (images embedded) with the "
        "config, data, curves, metrics, errors, architecture, throughput and environment.",
        default=True, resume="free")
    saved_model: bool = _doc(
        "Also write `saved_model/`: the model as a TensorFlow SavedModel that takes encoded "
        "PNG or JPEG bytes and decodes them as training did, for Vertex AI online prediction "
        "and the Model Registry (`trainer.submit --upload_model`).",
        default=True, resume="free")
    experiment: Optional[str] = _doc(
        "A Vertex AI Experiment the chief logs the run to (the resolved config as parameters, "
        "the final val and test metrics, per-epoch metrics when the experiment has a "
        "TensorBoard): its name (in the project and region of the Google Cloud defaults), or "
        "`projects/P/locations/REGION/metadataStores/default/contexts/NAME`. Needs Google Cloud "
        "credentials; without them, or when Vertex AI refuses, one warning and training goes "
        "on. `trainer.submit --experiment` sets it.", default=None, resume="free")
    experiment_run: Optional[str] = _doc(
        "The experiment run's name (lowercase letters, digits, `-`); empty means the run's "
        "`name`, lowercased.", default=None, resume="free")


@dataclass(frozen=True)
class Config:
    name: str = _doc(
        "The run's name and the name of its folder: 1 to 128 letters, digits, `.`, `_` or `-`, "
        "starting with a letter, digit or `_` (e.g. `run-01`). Re-running the same name in the "
        "same output dir resumes it.",
        default="demo", pattern=r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", example="run-01",
        resume="free")
    task: str = _doc(
        "`classification` or `regression`; picks the head, loss and metrics.",
        default="classification", choices=("classification", "regression"),
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as it is written and shown (`config.yaml`, the report): credentials
        redacted, since the run's folder is shared and copied."""
        from trainer.runtime import secrets

        return yaml.safe_dump(secrets.redact(self.to_dict()), sort_keys=False)

    def with_data_shape(self, input_shape: typing.Sequence[int]) -> "Config":
        """The config with what the data decided written in, so the `config.yaml` a run writes
        holds the values it used: `data.image_size` becomes the size of the images the model
        took, where the config left it to the first image."""
        if self.data.image_size is not None:
            return self
        size = [int(input_shape[0]), int(input_shape[1])]
        return dataclasses.replace(self, data=dataclasses.replace(self.data, image_size=size))


def monitor_mode(monitor: str) -> str:
    """'max' for accuracy-like quantities, 'min' for losses and errors (Keras's `auto` rule):
    which way `train.monitor`, or a search's metric, gets better."""
    return "max" if any(s in monitor for s in ("acc", "auc", "precision", "recall")) else "min"


# ----------------------------------------------------------------------------------------------
# Resuming: which keys a re-run of the same name may change. Each field declares it once, in its
# metadata: `resume="recorded"` (how training goes on: allowed, and recorded from the epoch it
# takes effect), `resume="free"` (where files go, what is written, speed: allowed as is); any
# other key says what was trained (the model, its input, the task, the classes, the data) and
# must stay the same, or the checkpoint's weights would be another model's.


def flat(values: typing.Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys (`train.learning_rate`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "model.params":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_kinds() -> dict[str, str]:
    """Every dotted key and how a resume treats a change of it: same, recorded or free."""
    kinds: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                kinds[f"{prefix}{f.name}"] = f.metadata.get("resume", "same")

    walk(Config, "")
    return kinds


def resume_markdown() -> str:
    """What a re-run of the same name may change, generated from the fields' declarations."""
    kinds = resume_kinds()

    def keys(kind: str) -> str:
        return ", ".join(f"`{k}`" for k, v in kinds.items() if v == kind)

    return ("- **may change, recorded** in `config.yaml`, `metrics.json` and the report as "
            "`from epoch N: key old -> new`: " + keys("recorded") + ".\n"
            "- **may change freely** (where files go, what is written, speed): " + keys("free")
            + ".\n- **must stay the same** (the model, its input, the task, the classes, the "
            "data; a change ends the re-run with one `error:` line naming the keys): "
            + keys("same") + ". The input shape and the classes the data gives must match too.")


def with_values(cfg: Config, values: typing.Mapping[str, Any]) -> Config:
    """`cfg` with some dotted keys set to other (already valid) values."""
    raw = cfg.to_dict()
    for key, value in values.items():
        set_key(raw, key, value, "with_values")
    return dataclasses.replace(
        cfg, **{k: type(getattr(cfg, k))(**v) if isinstance(v, dict) else v
                for k, v in raw.items()})


# ----------------------------------------------------------------------------------------------
# Building a config: defaults -> YAML -> overrides -> validation.


def load(path: Optional[str] = None, overrides: typing.Sequence[str] = (),
         output_dir: Optional[str] = None) -> Config:
    """Build the run's config from an optional YAML file (any storage path) and `--set` overrides."""
    raw, source = load_raw(path, overrides)
    if output_dir:
        if raw.get("output") is None:
            raw["output"] = {}
        if not isinstance(raw["output"], dict):
            raise UserError(f"key 'output' is not a mapping, {source}, expected a section")
        raw["output"]["dir"] = output_dir
    return from_dict(raw, source)


def load_raw(path: Optional[str] = None, overrides: typing.Sequence[str] = ()
             ) -> tuple[dict, str]:
    """The keys as given (the YAML file with `--set` applied, no defaults) and their source:
    what a tool asks when a default must not count as asked (`trainer.convert`)."""
    raw: dict = {}
    source = "--set" if overrides else "the built-in demo config"
    if path:
        from trainer import storage

        source = path
        raw = parse_yaml(storage.read_text(path, storage.CONFIG_LIMIT, "a config"), source)
    for item in overrides:
        apply_override(raw, item)
    return raw, source


# YAML errors that PyYAML does not wrap: `2001-13-45` (a timestamp), `!!int 1.5`, deep nesting.
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)
# Values a config may hold once YAML aliases are expanded; beyond it a document is an alias bomb.
MAX_VALUES = 10_000


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(f"duplicate key {_shown(key)} on lines {first} and {second}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:  # the mapping's own keys, before merges (`<<`) join them
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class says so
                pass
        return super().construct_mapping(node, deep=deep)


def _safe_load(text: str, source: str, what: str) -> Any:
    """`yaml.safe_load`, with every way it fails, duplicate keys and alias bombs, as UserError."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise UserError(f"{exc}, {source}, expected each key once (YAML keeps only the last)"
                        ) from None
    except _YAML_ERRORS as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        reason = "" if isinstance(exc, yaml.YAMLError) else f" ({str(exc)[:100]})"
        raise UserError(f"invalid YAML{reason}, {source}{where}, expected {what}") from None
    count, stack = 0, [data]
    while stack:  # iterative: shared (aliased) nodes count each time they are reached
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"YAML expands to more than {MAX_VALUES} values (aliases?), {source}, "
                            f"expected {what}")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, set)):
            stack.extend(node)
    return data


def _shown(value: Any) -> str:
    """A value as error messages show it: its repr, cut short (a hostile value can be huge)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def parse_yaml(text: str, source: str) -> dict:
    data = _safe_load(text, source, "a mapping of config keys")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config is a {type(data).__name__}, {source}, expected a mapping of config keys"
        )
    return data


def apply_override(raw: dict, item: str) -> None:
    """Apply one `key.sub=value` override; the value is parsed as a YAML scalar or list."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {_shown(item)} is not key=value, --set, expected e.g. "
                        "train.epochs=3")
    value = (_safe_load(text, f"--set {_shown(item)}", "a scalar or a [list]")
             if text.strip() else None)
    set_key(raw, key.strip(), value, f"--set {_shown(item)}")


def set_key(raw: dict, key: str, value: Any, where: str) -> None:
    """Set a dotted key (`train.epochs`) in a plain config mapping, creating sections as needed;
    `where` names the source of the key in the error when a section is in the way."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"key '{'.'.join(parts[:depth + 1])}' is not a section, "
                            f"{where}, expected a section such as train or data")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict, source: str = "config") -> Config:
    """Validate a plain mapping into a frozen Config, naming the first bad key and what it expects.

    Every key is checked alone, the task's defaults are filled in, then every cross-field rule
    (`RULES`) is checked: a config that loads is one the run can use, decided before any data
    is read or any epoch runs.
    """
    cfg = _with_defaults(_build(Config, raw, source, prefix=""))
    for rule in RULES:
        rule(cfg, source)
    return cfg


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"key '{prefix.rstrip('.')}' is a {type(raw).__name__}, {source}, "
                        "expected a mapping (a section of keys)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key)[:100], list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{near[0]}'?" if near else (
                f"expected one of {', '.join(prefix + k for k in fields)}")
            raise UserError(f"unknown key '{prefix}{_shown(key).strip(chr(39))}', {source}, {hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(value, kind, fields[key].metadata, f"{prefix}{key}", source)
    return cls(**kwargs)


def _check_value(value: Any, kind: Any, meta: typing.Mapping, key: str, source: str) -> Any:
    if kind is str and value is False and "off" in (meta.get("choices") or ()):
        value = "off"  # YAML 1.1 reads a bare `off` as false
    value = _coerce(value, kind, key, source)
    if value is None:
        return None
    choices = meta.get("choices")
    for item in value if isinstance(value, list) and choices else [value]:
        _check_choice(item, choices, key, source)
    if isinstance(value, str) and meta.get("words"):  # a number, or one of these words
        _check_choice(value, meta["words"], key, source)
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise _invalid(value, key, source, f"{length} values")
    for item in value if isinstance(value, list) else [value]:
        _check_range(item, meta, key, source)
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise _invalid(value, key, source, f"1 to 128 letters, digits, '.', '_' or '-', starting "
                       f"with a letter, digit or '_' (e.g. {meta['example']})")
    return value


def _check_range(value: Any, meta: typing.Mapping, key: str, source: str) -> None:
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(value, key, source, "a finite number")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
            op = ">" if meta.get("exclusive_min") else ">="
            raise _invalid(value, key, source, f"{op} {low}")
        if high is not None and value > high:
            raise _invalid(value, key, source, f"<= {high}")


def _invalid(value: Any, key: str, source: str, expected: str) -> UserError:
    return UserError(f"invalid value {_shown(value)} for '{key}', {source}, expected {expected}")


def _check_choice(value: Any, choices: Optional[tuple], key: str, source: str) -> None:
    # `True == 1`, so compare types too: `jit_compile: 1` is not `true`.
    if choices and not any(value == c and type(value) is type(c) for c in choices):
        names = [yaml.safe_dump(c).split("\n")[0] if isinstance(c, bool) else c for c in choices]
        near = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise _invalid(value, key, source, f"one of {', '.join(names)}{hint}")


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(kind) if a is not type(None)]
        return " or ".join(names)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(kind, str(kind))


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except UserError:
                continue
        raise _invalid(value, key, source, _type_name(kind))
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise _invalid(value, key, source, _type_name(kind))
        return [_coerce(v, item_kind, key, source) for v in value]
    if kind is float and isinstance(value, str):
        # PyYAML reads `1e-3` (no dot) as a string; users mean the number.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }.get(kind, False)
    if not ok:
        raise _invalid(value, key, source, _type_name(kind))
    return float(value) if kind is float else value


# ----------------------------------------------------------------------------------------------
# Documentation generated from the classes, so the README cannot drift from the code.


def reference_markdown() -> str:
    """The configuration reference as a Markdown table, one row per key."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = "" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
            shown = shown.removesuffix("\n...").strip()
            doc = f.metadata.get("doc", "")
            rows.append(f"| `{prefix}{f.name}` | {_type_name(kind)} | `{shown}` | {doc} |")

    walk(Config, "")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# Defaults that depend on other keys, filled in when the config is loaded.

DEFAULT_LOSS = {"classification": "sparse_categorical_crossentropy", "regression": "rmse"}
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mse", "mae"]}


def _with_defaults(cfg: Config) -> Config:
    """The task's loss and metrics and the format's own image size, where the config left them
    empty, so that the config a run writes says what it used."""
    train = dataclasses.replace(
        cfg.train, loss=cfg.train.loss or DEFAULT_LOSS[cfg.task],
        metrics=cfg.train.metrics or list(DEFAULT_METRICS[cfg.task]))
    twin = train.monitor[len("val_"):]
    if ("val" in absent_splits(cfg.data) and train.monitor.startswith("val_")
            and twin in logged_quantities(dataclasses.replace(cfg, train=train))):
        # No validation split: early stopping and the best epoch follow the training quantity
        # (a name that is no quantity at all is left for the monitor rule to name).
        train = dataclasses.replace(train, monitor=twin)
    made = formats.FORMATS[cfg.data.format].image_size
    data = (cfg.data if cfg.data.image_size is not None or made is None
            else dataclasses.replace(cfg.data, image_size=list(made)))
    return dataclasses.replace(cfg, train=train, data=data)


# ----------------------------------------------------------------------------------------------
# Cross-field rules: each takes the config (defaults filled in) and its source, and raises one
# UserError when broken. Checked in this order by `from_dict`.

Rule = Callable[[Config, str], None]
RULES: list[Rule] = []


def _rule(check: Rule) -> Rule:
    RULES.append(check)
    return check


SPLIT_FRACTIONS = {"val": "validation_split", "test": "test_split"}


def carved_splits(data: DataConfig) -> list[str]:
    """The evaluation splits carved out of `data.train`: those given neither a path nor rows,
    with a fraction above 0."""
    return [k for k in ("val", "test") if getattr(data, k) is None
            and getattr(data, f"{k}_rows") is None and getattr(data, SPLIT_FRACTIONS[k]) > 0]


def absent_splits(data: DataConfig) -> list[str]:
    """The evaluation splits the config leaves out: no path, no rows and a fraction of 0 (seed
    004's 70/30 train/test split has no validation split)."""
    return [k for k in ("val", "test") if getattr(data, k) is None
            and getattr(data, f"{k}_rows") is None and getattr(data, SPLIT_FRACTIONS[k]) == 0]


@_rule
def _data_matches_the_format(cfg: Config, source: str) -> None:
    d = cfg.data
    if not formats.FORMATS[d.format].reads_files:
        for key in ("train", "val", "test"):
            if getattr(d, key) is not None:
                raise UserError(f"data.{key} is set but data.format={d.format} draws its own "
                                f"data, {source}, expected no data.train, data.val or data.test "
                                "(or a format that reads files)")
    elif d.train is None:
        raise UserError(f"no training data given, data.train, {source}, expected a path or glob "
                        f"for data.format={d.format}")


@_rule
def _row_ranges_are_ranges(cfg: Config, source: str) -> None:
    for key in ("train", "val", "test"):
        rows = getattr(cfg.data, f"{key}_rows")
        if rows is not None and (len(rows) != 2 or not 0 <= rows[0] < rows[1]):
            raise UserError(f"invalid row range {rows}, data.{key}_rows, {source}, expected "
                            "[start, stop) with 0 <= start < stop")


@_rule
def _row_ranges_do_not_overlap(cfg: Config, source: str) -> None:
    d = cfg.data
    # Rows of the same files: `val_rows`/`test_rows` without their own path are rows of `train`.
    ranges = [(k, getattr(d, k) if k == "train" else (getattr(d, k) or d.train),
               getattr(d, f"{k}_rows")) for k in ("train", "val", "test")]
    for i, (a, files_a, rows_a) in enumerate(ranges):
        for b, files_b, rows_b in ranges[i + 1:]:
            if (rows_a is not None and rows_b is not None and files_a == files_b
                    and rows_a[0] < rows_b[1] and rows_b[0] < rows_a[1]):
                raise UserError(f"data.{a}_rows {rows_a} and data.{b}_rows {rows_b} overlap, "
                                f"{source}, expected disjoint row ranges (no sample in both "
                                f"{a} and {b})")


@_rule
def _carved_splits_leave_rows(cfg: Config, source: str) -> None:
    d = cfg.data
    total = d.validation_split + d.test_split
    if len(carved_splits(d)) == 2 and total >= 1:
        raise UserError(f"data.validation_split + data.test_split is {round(total, 6)}, {source}, "
                        "expected less than 1 (both are carved out of data.train, which must keep "
                        "rows to train on)")


@_rule
def _groups_exist_for_split_by_group(cfg: Config, source: str) -> None:
    d = cfg.data
    if d.split_by == "group" and carved_splits(d) and formats.FORMATS[d.format].groups is None:
        raise UserError(f"no group per sample (data.split_by=group), data.format={d.format}, "
                        f"{source}, expected {formats.groups_expected(d.format, d.group_key)}")


@_rule
def _regularisation_fits_the_task(cfg: Config, source: str) -> None:
    augment_spec.check_task(augment_spec.parse(cfg.data.augment, source=source), cfg.task, source)
    if cfg.train.label_smoothing and cfg.task != "classification":
        raise _invalid(cfg.train.label_smoothing, "train.label_smoothing", source,
                       f"0 for task={cfg.task} (it smooths class labels; classification only)")


@_rule
def _class_weight_needs_classes(cfg: Config, source: str) -> None:
    if cfg.train.class_weight != "none" and cfg.task != "classification":
        raise _invalid(cfg.train.class_weight, "train.class_weight", source,
                       f"none for task={cfg.task} (only classes are weighed)")


# Losses and metrics that fit each task's labels and outputs: classification trains on class
# indices (integers) against softmax probabilities, regression on numbers against numbers.
# Anything else fails inside `fit` (`categorical_crossentropy` wants one-hot labels, `auc` and
# `precision_at_k` want binary or ranked labels) or trains the wrong thing silently (`mse` on
# class indices).
TASK_LOSSES = {
    "classification": ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"),
    "regression": ("rmse", "mse", "mae", "mape", "msle", "huber", "log_cosh", "logcosh",
                   "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
                   "mean_squared_logarithmic_error", "MeanSquaredError", "MeanAbsoluteError",
                   "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "Huber", "LogCosh"),
}
TASK_METRICS = {
    "classification": ("accuracy", "acc", "sparse_categorical_accuracy",
                       "sparse_top_k_categorical_accuracy", "sparse_categorical_crossentropy",
                       "SparseCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
                       "SparseCategoricalCrossentropy"),
    "regression": ("mse", "mae", "mape", "msle", "mean_squared_error", "mean_absolute_error",
                   "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
                   "log_cosh", "logcosh", "MeanSquaredError", "MeanAbsoluteError",
                   "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
                   "RootMeanSquaredError", "LogCoshError"),
}


@_rule
def _loss_and_metrics_fit_the_task(cfg: Config, source: str) -> None:
    for key, value, allowed in (("train.loss", [cfg.train.loss], TASK_LOSSES[cfg.task]),
                                ("train.metrics", cfg.train.metrics, TASK_METRICS[cfg.task])):
        for name in value or ():
            if name not in allowed:
                raise _invalid(name, key, source, f"one of {', '.join(allowed)} for "
                               f"task={cfg.task} (labels are "
                               f"{'class indices' if cfg.task == 'classification' else 'numbers'})")


@_rule
def _monitor_is_logged(cfg: Config, source: str) -> None:
    _check_choice(cfg.train.monitor, tuple(logged_quantities(cfg)), "train.monitor", source)


@_rule
def _names_fit_the_task(cfg: Config, source: str) -> None:
    for key, task in (("target_names", "regression"), ("class_names", "classification")):
        names = getattr(cfg.data, key)
        if names is None:
            continue
        if cfg.task != task:
            raise _invalid(names, f"data.{key}", source, f"nothing for task={cfg.task} (it "
                           f"names the outputs of task={task})")
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if not names or twice is not None or any(not n.strip() for n in names):
            raise _invalid(names, f"data.{key}", source, "distinct, non-empty names")


def logged_quantities(cfg: Config) -> list[str]:
    """What a run logs each epoch, as tf-keras names it: the loss and each metric, on the
    training data and then on the validation data (`val_`). A metric given by its class name
    (`AUC`) is logged under its snake_case name (`auc`)."""
    names = ["loss"]
    for metric in cfg.train.metrics or ():
        # A name tf-keras resolves to a function (`MSE`) is logged as given: allow both forms.
        names += [n for n in dict.fromkeys((metric, _keras_metric_name(metric))) if n not in names]
    return names + ([] if "val" in absent_splits(cfg.data) else [f"val_{n}" for n in names])


def _keras_metric_name(name: str) -> str:
    # tf-keras's own rule (generic_utils.to_snake_case); lower-case names are kept as given.
    words = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", words).lower()
