"""From the data config to train/validation/test splits: lazy rows plus encoded labels.

Validation and test sets come from their own paths, or from row ranges (`data.*_rows`), or are
carved out of the training data by a permutation drawn from `train.seed` (of rows, or of whole
groups with `data.split_by: group`), so the same config always splits the same way. Only labels,
groups and row numbers are held in memory; images are read by the pipeline when it needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from trainer import storage
from trainer.config import Config, absent_splits, carved_splits
from trainer.data import context, folds, formats, groups, images, labels, litter
from trainer.data.source import Source, View
from trainer.errors import UserError


@dataclass
class SplitData:
    view: View
    y: np.ndarray  # int32 (N,) class indices, or float32 (N, K) targets
    source: str

    def __len__(self) -> int:
        return len(self.view)

    @property
    def x(self) -> np.ndarray:
        """All images as float32 (N, H, W, C): for small data and tests; the pipeline streams."""
        return self.view.array().astype(np.float32, copy=False)


SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    train: SplitData
    val: Optional[SplitData]  # None: the config leaves it out (validation_split: 0)
    test: Optional[SplitData]  # None: test_split: 0
    task: str
    class_names: Optional[list[str]]
    split_method: str  # given, random (rows) or group (whole groups)
    asked: dict[str, float] = field(default_factory=dict)  # fractions of the carved splits
    target_names: Optional[list[str]] = None  # regression: one name per target
    layout: str = "channels last"  # how the arrays were read, for the log and datacheck

    @property
    def present(self) -> dict[str, SplitData]:
        """The splits there are, by name, in order (train always)."""
        return {k: getattr(self, k) for k in SPLITS if getattr(self, k) is not None}

    @property
    def held_out(self) -> Optional[str]:
        """The split the final figures (confusion matrix, errors, per-target scores) come from:
        test, or validation when there is no test split, or None when neither exists."""
        return "test" if self.test is not None else "val" if self.val is not None else None

    def absent_lines(self, monitor: str) -> list[str]:
        """What a left-out split changes, for the log, datacheck and the report; `monitor` is
        `train.monitor` as the config settled it."""
        lines = []
        if self.val is None:
            lines.append("no validation split (data.validation_split: 0): early stopping and the "
                         f"best epoch follow the training data's {monitor} (train.monitor)")
        if self.test is None:
            lines.append("no test split (data.test_split: 0): the final figures are the "
                         "validation split's, which also chose the best epoch, so they flatter "
                         "the model" if self.val is not None else
                         "no test split (data.test_split: 0) and no validation split: there are "
                         "no held-out figures, only the training history")
        return lines

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train.view.sample_shape)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.class_names else int(self.train.y.shape[1])

    def summary(self) -> dict:
        """Counts per split (samples, groups, per class), for the log and metrics.json."""
        out: dict = {"input_shape": list(self.input_shape), "split_method": self.split_method}
        parts = self.present
        per_split, in_two = groups.counts({k: p.view.groups for k, p in parts.items()})
        out["layout"] = self.layout
        if self.target_names:
            out["target_names"] = list(self.target_names)
        sizes = resized(self)
        if sizes:
            out["resized"] = sizes
        absent = [k for k in SPLITS if k not in parts]
        if absent:
            out["absent_splits"] = absent
        for name, part in parts.items():
            entry: dict = {"samples": len(part), "source": part.source}
            if name in self.asked:
                entry["fraction_asked"] = self.asked[name]
            if name in per_split:
                entry["groups"] = per_split[name]
            if self.class_names:
                counts = np.bincount(part.y, minlength=len(self.class_names))
                entry["per_class"] = {c: int(n) for c, n in zip(self.class_names, counts)}
            out[name] = entry
        if in_two:
            out["groups_in_two_splits"] = in_two
        return out


def open_source(config: Config, paths, key: str, spec: images.ImageSpec) -> Source:
    """The files of `data.<key>` as one source, read by the format's reader (a format that draws
    its own data, the demo, is given no files)."""
    data = config.data
    reads_files = formats.FORMATS[data.format].reads_files
    files = storage.expand(paths, f"data.{key}", skip=litter.is_litter) if reads_files else []
    return Source(formats.reader(data.format)(files, data, spec), data.channels)


def _own_test_split(config: Config, spec: images.ImageSpec) -> Optional[View]:
    """The test arrays of npz files in Keras's layout (`mnist.npz`: `x_train`, `y_train`,
    `x_test`, `y_test`), which are the test split where the config would carve one."""
    from trainer.data import readers

    d = config.data
    if d.format != "npz":
        return None
    shards = readers.npz_test_split(storage.expand(d.train, "data.train"), d, spec)
    if shards is None:
        return None
    x, y = readers.keras_keys(d, "test")
    source = Source(shards, d.channels)
    return View(source, name=f"{source.description} [{x}, {y}]")


def _row_range(rows: Optional[list[int]], n: int, key: str, source: str) -> Optional[np.ndarray]:
    """`data.<key>` as row numbers; the config checked it is a range, here it must fit `n` rows."""
    if rows is None:
        return None
    if rows[1] > n:
        raise UserError(f"invalid row range {rows} for {n} samples, data.{key}={source}, expected "
                        f"[start, stop) with 0 <= start < stop <= {n}")
    return np.arange(rows[0], rows[1])


def _carve(rows: np.ndarray, config: Config, carve_val: bool, carve_test: bool, source: str):
    """Row arrays (train, val, test) for the splits taken out of the training rows, at random."""
    d = config.data
    n = len(rows)
    n_test = int(round(n * d.test_split)) if carve_test else 0
    n_val = int(round(n * d.validation_split)) if carve_val else 0
    # Only the row count decides this; the config has checked that each carved fraction is > 0
    # and that together they leave some of data.train.
    if (carve_test and n_test < 1) or (carve_val and n_val < 1) or n - n_test - n_val < 1:
        raise UserError(
            f"{n} samples are too few for validation_split={d.validation_split} and "
            f"test_split={d.test_split}, data.train={source}, expected at least one sample in "
            "each of train, validation and test")
    order = rows[np.random.default_rng(config.train.seed).permutation(n)]
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _carve_groups(src: Source, rows: np.ndarray, config: Config, carve: list[str]):
    """Row arrays (train, val, test) taking whole groups of the training rows."""
    d = config.data
    if src.groups is None:
        raise UserError(f"no group per sample (data.split_by=group), {src.ungrouped}, expected "
                        f"{formats.groups_expected(d.format, d.group_key)}")
    fractions = {k: d.test_split if k == "test" else d.validation_split for k in ("test", "val")
                 if k in carve}
    parts = groups.carve(src.groups[rows], rows, fractions, config.train.seed,
                         f"data.train={src.description}")
    empty = np.array([], np.int64)
    return parts["train"], parts.get("val", empty), parts.get("test", empty)


def split_views(config: Config) -> tuple[dict[str, View], str, dict[str, float]]:
    """The three splits as views, how they were made (`given`, `random` or `group`), and the
    fractions asked of the carved ones."""
    d = config.data
    spec = images.spec_from_config(d)
    train_src = open_source(config, d.train, "train", spec)
    if len(train_src) == 0:
        raise UserError(f"no samples, data.train={train_src.description}, expected at least one image")
    shape = train_src.sample_shape
    later_spec = images.ImageSpec(shape[:2], shape[2])  # val/test images match the training ones
    train_rows = _row_range(d.train_rows, len(train_src), "train_rows", train_src.description)
    rows = np.arange(len(train_src)) if train_rows is None else train_rows
    views: dict[str, View] = {}
    carve = carved_splits(d)  # the config made sure that each keeps rows
    own_test = _own_test_split(config, later_spec) if "test" in carve else None
    if own_test is not None:  # Keras's npz layout brings its test split: nothing to carve
        views["test"], carve = own_test, [k for k in carve if k != "test"]
    for key in ("val", "test"):
        given_rows = getattr(d, f"{key}_rows")
        if key in carve or key in absent_splits(d) or key in views:
            continue
        if getattr(d, key) is not None:
            src = open_source(config, getattr(d, key), key, later_spec)
            if len(src) == 0:
                raise UserError(f"no samples, data.{key}={src.description}, expected at least one image")
            views[key] = View(src, _row_range(given_rows, len(src), f"{key}_rows", src.description))
        else:
            taken = _row_range(given_rows, len(train_src), f"{key}_rows", train_src.description)
            views[key] = View(train_src, taken, f"{train_src.description} rows {given_rows}")
            rows = np.setdiff1d(rows, taken)  # never train on evaluation rows
    if d.fold is not None:  # cross-validation: this fold's rows are the test split
        held = np.intersect1d(folds.fold_rows(train_src, train_rows, config), rows)
        views["test"] = View(train_src, held, f"{train_src.description} (fold {d.fold[0]} of "
                             f"{d.fold[1]})")
        rows, carve = np.setdiff1d(rows, held), [k for k in carve if k != "test"]
    by_group = bool(carve) and d.split_by == "group"
    if carve:
        kept, val_rows, test_rows = (
            _carve_groups(train_src, rows, config, carve) if by_group else
            _carve(rows, config, "val" in carve, "test" in carve, train_src.description))
        how = ", whole groups" if by_group else ""
        name = train_src.description
        if "val" in carve:
            views["val"] = View(train_src, val_rows, f"{name} (validation_split{how})")
        if "test" in carve:
            views["test"] = View(train_src, test_rows, f"{name} (test_split{how})")
        rows = kept
    views["train"] = View(train_src, rows, train_src.description)
    asked = {k: d.validation_split if k == "val" else d.test_split for k in carve}
    return views, "group" if by_group else "random" if carve else "given", asked


def load_splits(config: Config) -> Splits:
    views, method, asked = split_views(config)
    views = context.wrap(views, config.data.frame_context)  # frames t-K..t+K as channels
    class_names = None
    built: dict[str, Optional[SplitData]] = {"val": None, "test": None}
    for key in (k for k in SPLITS if k in views):
        view = views[key]
        where = f"data.{key}={view.name}"
        if len(view) == 0:
            raise UserError(f"no samples, {where}, expected at least one image")
        if key != "train" and view.sample_shape != views["train"].sample_shape:
            raise UserError(f"images of shape {view.sample_shape}, {where}, expected "
                            f"{views['train'].sample_shape} like the training data")
        if config.task == "classification":
            y, class_names = labels.encode_classes(view.labels, where, class_names)
        else:
            y = labels.encode_targets(view.labels, where)
        built[key] = SplitData(view, y, view.name)
    if class_names is not None and len(class_names) < 2:
        raise UserError(f"only one class ({class_names[0]}), data.train={views['train'].name}, "
                        "expected at least two classes for classification")
    train = views["train"].source
    return Splits(**built, task=config.task,
                  class_names=_named(class_names, config.data.class_names, "class_names",
                                     f"data.train={views['train'].name}"),
                  split_method=method, asked=asked,
                  target_names=None if class_names else target_names(config, built["train"].y),
                  layout=LAYOUTS[train.layout].format(shape=train.stored_shape))


def resized(splits: Splits) -> Optional[dict]:
    """Image files read so far at another size than the model's and resized to it: how many,
    of how many, and from which sizes; None when no split reads image files."""
    sources = {id(p.view.source): p.view.source for p in splits.present.values()}
    files = [s for s in sources.values() if any(sh.resized is not None for sh in s.shards)]
    if not files:
        return None
    sizes: dict[str, int] = {}
    for source in files:
        for (h, w), n in sorted(source.resized().items()):
            sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + n
    h, w = splits.input_shape[:2]
    return {"to": f"{h}x{w}", "count": sum(sizes.values()),
            "of": sum(len(s) for s in files), "from": sizes}


def resize_lines(splits: Splits) -> list[str]:
    """The resize count as the log and datacheck say it (nothing when no image was resized)."""
    r = resized(splits)
    if not r or not r["count"]:
        return []
    return [f"{r['count']} of {r['of']} image files were resized to {r['to']} (data.image_size, "
            "or the first image's size), from " +
            ", ".join(f"{size} ({n})" for size, n in r["from"].items())]


LAYOUTS = {"last": "channels last, samples {shape}", "first": "channels first, samples {shape} "
           "read as (H, W, C)"}


def _named(found: Optional[list[str]], given: Optional[list[str]], key: str,
           where: str) -> Optional[list[str]]:
    """The names the config gives (`data.class_names`, `data.target_names`) in place of those
    found, one per output."""
    if found is None or given is None:
        return found
    if len(given) != len(found):
        raise UserError(f"{len(given)} names in data.{key} ({', '.join(given)}), {where}, "
                        f"expected {len(found)}, one per {'class' if key == 'class_names' else 'target'} "
                        f"({', '.join(found)})")
    return list(given)


def target_names(config: Config, y: np.ndarray) -> list[str]:
    """Regression: one name per target column, from `data.target_names`, a `csv`'s
    `label_columns`, or `target_<k>`."""
    d = config.data
    found = (list(d.label_columns) if d.format == "csv" and len(d.label_columns) == y.shape[1]
             else [f"target_{k}" for k in range(y.shape[1])])
    return _named(found, d.target_names, "target_names", f"data.train={d.train}")
