"""The config's schema: one frozen dataclass per section, each field carrying its default, its
documentation and what it accepts (`choices`, `min`/`max`, `length`, `pattern`, `words`) and how
a resume treats a change of it (`resume`), in its metadata.

Defaults and their documentation live here and nowhere else: loading (`loading`) checks each
value against this metadata, the configuration reference (`docs`) is generated from it, and the
resume rules (`resuming`) read it. `leaves` is the one walk over the fields that they share.

Longer than 400 lines on purpose: it is one job, the list of every key with its documentation,
and splitting the sections over several files would only scatter the one place a new key goes.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

import yaml

from trainer.data import augment_spec, formats

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
        "Channels of the images: `grey` (1), `rgb` (3) or `auto` (as the first image; the "
        "generated `shapes` are RGB).",
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
    frame_context: int = _doc(
        "Video frames (a group per video, frames in file order, as `trainer.convert --video` "
        "writes them): the model sees frames t-K..t+K stacked as the channels of frame t's "
        "sample, the video's first or last frame repeated at its edges. `trainer.predict` and "
        "the served model (whose instances are then one video's consecutive frames) stack the "
        "same way. 0: one frame per sample.", default=0, min=0, max=50)
    fold: Optional[list[int]] = _doc(
        "`[k, K]`: this run is fold k (from 0) of a K-fold cross-validation "
        "(`trainer.crossval` sets it): the k-th of K parts of `train` is the test split, by "
        "whole groups with `split_by: group`, else by sample, drawn from `train.seed`; "
        "validation is carved from the rest. Empty: no cross-validation.",
        default=None, length=2, min=0, max=1000)

    def channel_count(self) -> Optional[int]:
        """The channels of the images, where the config decides them: 1 for `color: grey`, 3
        for `rgb`; for `auto`, the format's own (the generated `shapes` are RGB), else None:
        the first image decides."""
        return {"grey": 1, "rgb": 3}.get(self.color, formats.FORMATS[self.format].channels)


@dataclass(frozen=True)
class ModelConfig:
    name: str = _doc(
        "A registered architecture or keras.applications backbone under the task's head (the "
        "table under [Models](#models), listed from the registry; docs/few-labels.md) or `package.module:function`, your own builder called as "
        "`function(input_shape, num_outputs, **params)`. Checked, with its parameters, before "
        "any data is read.",
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
        "Extra keyword arguments passed to the builder (for your own `module:function`); for a "
        "backbone, its keras.applications options (`alpha`, `minimalistic`, "
        "`drop_connect_rate`, ...) and `image_size`, the size it resizes the images to (at "
        "least 32; default: the images' own, at least 32).",
        default_factory=dict,
    )
    init_from: Optional[str] = _doc(
        "Start from an earlier run's weights: its folder or its `model.h5` (path, `gs://` or "
        "`/gcs/` URL). Its layers pair with this model's in order; each pair of the same kind "
        "and weight shapes takes the earlier weights, the others (a head with another number of "
        "classes or targets) are new. The log, `metrics.json` and the report list both.",
        default=None,
    )
    keep_standardization: bool = _doc(
        "With `init_from`: keep the earlier model's input standardisation (and targets' scale) "
        "instead of the new data's.",
        default=False,
    )
    trainable_from: Optional[str] = _doc(
        "Fine-tuning: the pretrained part (a backbone's layers, or those `init_from` filled) "
        "trains from this layer up; the layers below it stay frozen. Empty: all of it trains "
        "(after `train.freeze_epochs`).",
        default=None,
    )
    weights: str = _doc(
        "A backbone's starting weights: `none` (random), `imagenet` (Keras's download, once per "
        "job), or a weights file (path, `gs://` or `/gcs/` URL; the backbone's `save_weights`), "
        "checked against the architecture before any data is read.",
        default="none",
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
    freeze_epochs: int = _doc(
        "Fine-tuning: train only the head for this many epochs, the pretrained part (a "
        "backbone, or the layers `model.init_from` filled) frozen with its BatchNorm in "
        "inference mode; then train it too, at `finetune_learning_rate`. 0: no frozen phase.",
        default=0, min=0, max=100_000)
    finetune_learning_rate: float = _doc(
        "Adam's learning rate once the pretrained part is unfrozen (a fresh Adam, its "
        "`lr_schedule` over the epochs left). 1e-5, a hundredth of the head's rate, as the Keras "
        "transfer-learning guide uses: pretrained features move a little instead of being "
        "overwritten by the large gradients of a new head.",
        default=1e-5, min=0.0, exclusive_min=True, resume="recorded")
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
class EvalConfig:
    threshold: Union[float, str] = _doc(
        "Two classes: the decision threshold, the second class's probability from which a "
        "sample is called that class: a number, or chosen on the validation split: `f1` (best "
        "F1), `precision@P` (the most recall at precision >= P), `recall@R` (the most "
        "precision at recall >= R). Stored in `model.h5` and applied by `trainer.predict`, "
        "batch curation and the served model; `metrics.json` gives it as `threshold`.",
        default=0.5, min=0.0, max=1.0, resume="free")
    calibrate: str = _doc(
        "`temperature`: fit one temperature dividing the logits on the validation split and "
        "store it inside the model, so saved, served and predicted probabilities are "
        "calibrated (`metrics.json` `calibration`); `none`: probabilities as trained.",
        default="none", choices=("none", "temperature"), resume="free")


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
    eval: EvalConfig = field(default_factory=EvalConfig)

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


def leaves(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Every key that holds a value (not a section), in the classes' order: its dotted name
    (`train.learning_rate`), its field (default and metadata) and its type."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from leaves(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, kind


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one, for a field made by a factory)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
