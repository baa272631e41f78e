"""The search space file: which config keys vary, how, and what the search optimises.

```yaml
metric: val_accuracy          # default: the config's train.monitor
direction: maximize           # default: from the metric's name (accuracy/auc/precision/recall: max)
pruning: {startup_trials: 2, warmup_epochs: 1}   # or `pruning: false`
params:
  train.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
  model.dropout: {uniform: [0.0, 0.5]}
  model.name: {choice: [tiny_cnn, shapes_cnn]}
  train.batch_size: {grid: [16, 32]}      # a bare list, [16, 32], is a grid too (seed 003)
```

`grid` values are all tried, in order (several grid keys: every combination); `choice`, `uniform`
and `log_uniform` are sampled. Ranges whose bounds are both integers give integers. Every value
a parameter can take is checked against the config's own validation before the first trial, so
a typo fails at once, naming the key.

The blueprint's grid file (seed 003) lists its parameters flat, beside `params:` rather than in
it, by short names: `learning_rate: [0.001, 0.0003]`. Such a key is taken as a grid when it
names one config key unambiguously: a full key (`train.learning_rate`) or the last part of
exactly one (`learning_rate`, `batch_size`, `epochs`, `dropout`, ...); anything else is refused
with the `params:` form to write instead.

A grid promises every combination, so its size is known before anything runs (the product of
its lists' lengths, never the list of combinations) and one of more than MAX_GRID combinations
is refused: `choice` samples a key instead. A space that is all grid trains each combination to
its end; pruning is on by default only when something is sampled.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from trainer import config as config_mod
from trainer.config import Config, monitor_mode
from trainer.errors import UserError

KINDS = ("grid", "choice", "uniform", "log_uniform")
_TOP_KEYS = ("metric", "direction", "pruning", "params")
# Combinations a grid may have: each is a whole training run, so a larger grid can never be done.
MAX_GRID = 10_000
_SET_BY_SEARCH = ("name", "output.dir")  # each trial's own
_PRUNING_KEYS = ("startup_trials", "warmup_epochs")


@dataclass(frozen=True)
class Param:
    key: str  # a dotted config key, e.g. train.learning_rate
    kind: str  # one of KINDS
    values: tuple = ()  # grid and choice
    low: Optional[float] = None  # uniform and log_uniform
    high: Optional[float] = None
    name: str = ""  # the Optuna parameter's name: the key, or `key#N` (see trainer.tune.study)

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"

    def distribution(self):
        """The Optuna distribution `suggest` draws from."""
        import optuna

        if self.kind in ("grid", "choice"):
            return optuna.distributions.CategoricalDistribution(list(self.values))
        if self.integer:
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high),
                                                      log=self.log)

    def suggest(self, trial) -> Any:
        """The trial's value, drawn by the Optuna sampler (or fixed when the trial was enqueued)."""
        name = self.name or self.key
        if self.kind in ("grid", "choice"):
            return trial.suggest_categorical(name, list(self.values))
        if self.integer:
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def examples(self) -> list:
        """Values that together exercise the config's validation for this key."""
        return list(self.values) if self.values else [self.low, self.high]


@dataclass(frozen=True)
class Pruning:
    enabled: bool = True
    startup_trials: int = 2  # trials that run to the end before any is judged
    warmup_epochs: int = 1  # epochs of each trial that are never judged


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    metric: str
    direction: str  # "minimize" or "maximize"
    pruning: Pruning = field(default_factory=Pruning)
    source: str = "space"

    @property
    def grid(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "grid")

    @property
    def grid_only(self) -> bool:
        return bool(self.params) and len(self.grid) == len(self.params)

    @property
    def grid_size(self) -> int:
        """How many combinations the grid has, counted without listing them."""
        return math.prod(len(p.values) for p in self.grid)

    def grid_points(self) -> Iterator[dict]:
        """Every combination of the grid parameters, in file order, one at a time (one empty
        dict when there are none)."""
        keys = [p.key for p in self.grid]
        return (dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in self.grid)))

    def default_trials(self) -> int:
        """The whole grid when everything is a grid, else ten sampled trials."""
        return self.grid_size if self.grid_only else 10


def trial_config(base: Config, params: dict, name: str, output_dir: str, source: str) -> Config:
    """The base config with the trial's parameters, name and output directory, validated."""
    raw = copy.deepcopy(base.to_dict())
    for key, value in params.items():
        config_mod.set_key(raw, key, value, source)
    raw["name"] = name
    raw["output"]["dir"] = output_dir
    return config_mod.from_dict(raw, source)


def _parse_param(key: str, spec: Any, where: str) -> Param:
    if isinstance(spec, list):
        spec = {"grid": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UserError(f"parameter '{key}' is {spec!r}, {where}, expected one of "
                        f"{{grid: [...]}}, {{choice: [...]}}, {{uniform: [low, high]}}, "
                        "{log_uniform: [low, high]} or a bare list (a grid)")
    kind, value = next(iter(spec.items()))
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'?" if near else f"expected one of {', '.join(KINDS)}"
        raise UserError(f"unknown kind '{kind}' for parameter '{key}', {where}, {hint}")
    if kind in ("grid", "choice"):
        if not isinstance(value, list) or not value:
            raise UserError(f"{kind} of '{key}' is {value!r}, {where}, expected a non-empty list")
        for v in value:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise UserError(f"value {v!r} of '{key}', {where}, expected numbers, strings, "
                                "true/false or null (lists and mappings cannot be searched)")
        return Param(key, kind, values=tuple(value))
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise UserError(f"{kind} of '{key}' is {value!r}, {where}, expected [low, high] numbers")
    low, high = value
    if not low < high:
        raise UserError(f"{kind} of '{key}' is [{low}, {high}], {where}, expected low < high")
    if kind == "log_uniform" and low <= 0:
        raise UserError(f"log_uniform of '{key}' starts at {low}, {where}, expected low > 0")
    return Param(key, kind, low=low, high=high)


def _flat_key(name: str, keys: list[str], source: str) -> str:
    """The config key a key beside `params:` stands for (the blueprint's `learning_rate`)."""
    matches = [k for k in keys if k == name or k.rsplit(".", 1)[-1] == name]
    section = name in {k.split(".", 1)[0] for k in keys if "." in k}  # `train:` is one too
    if len(matches) == 1 and not section:
        return matches[0]
    if matches or section:
        searchable = [k for k in matches if k not in _SET_BY_SEARCH]
        example = f"{name}.<key>" if section else [*searchable, name][0]
        meanings = [*matches, *([f"the section {name}"] if section else [])]
        what = f"could be {' or '.join(meanings)}" if len(meanings) > 1 else "is a config section"
        raise UserError(f"key '{name}' {what}, {source}, expected the full key under params:, "
                        f"e.g. params: {{{example}: [...]}}")
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    near = difflib.get_close_matches(name, [*_TOP_KEYS, *leaves, *keys], n=1, cutoff=0.6)
    if near and near[0] not in _TOP_KEYS:
        full = leaves.get(near[0], near[0])
        hint = f"did you mean '{near[0]}'? (a parameter: params: {{{full}: [...]}})"
    elif near:
        hint = f"did you mean '{near[0]}'?"
    else:
        hint = (f"expected {', '.join(_TOP_KEYS)}, or a config key to search, under params:, "
                "e.g. params: {train.learning_rate: [0.001, 0.0003]}")
    raise UserError(f"unknown key '{name}', {source}, {hint}")


def _raw_params(data: dict, base: Config, source: str) -> dict:
    """`params:`, with the keys beside it (the blueprint's flat form) added under their config
    names."""
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        raise UserError(f"no parameters, {source} params, expected a mapping of config keys to "
                        "grid/choice/uniform/log_uniform")
    raw_params = dict(raw_params)
    keys = list(config_mod.flat(base.to_dict()))
    for name, spec in data.items():
        if name in _TOP_KEYS:
            continue
        key = _flat_key(str(name), keys, source)
        if key in raw_params:
            raise UserError(f"'{name}' and params.{key} both set {key}, {source}, expected it "
                            "once")
        raw_params[key] = spec
    return raw_params


def _check_grid_size(params: tuple[Param, ...], source: str) -> None:
    grid = [p for p in params if p.kind == "grid"]
    count = math.prod(len(p.values) for p in grid)
    if count > MAX_GRID:
        sizes = " x ".join(f"{len(p.values)} {p.key}" for p in grid)
        raise UserError(f"the grid has {count:,} combinations ({sizes}), {source} params, expected "
                        f"at most {MAX_GRID:,}, since every combination is trained: shorten its "
                        "lists, or make some keys {choice: [...]} to sample them (--trials N)")


def parse(data: Any, base: Config, source: str) -> Space:
    """Validate a parsed space file against the base config."""
    if not isinstance(data, dict):
        raise UserError(f"space is a {type(data).__name__}, {source}, expected a mapping with "
                        "'params'")
    raw_params = _raw_params(data, base, source)
    if not raw_params:
        raise UserError(f"no parameters, {source} params, expected a mapping of config keys to "
                        "grid/choice/uniform/log_uniform")
    params = tuple(_parse_param(str(k), v, f"{source} params") for k, v in raw_params.items())
    for p in params:
        if p.key in _SET_BY_SEARCH:
            raise UserError(f"parameter '{p.key}', {source} params, expected a training setting "
                            "(each trial's name and directory are set by the search)")
    _check_grid_size(params, source)  # before any value is checked: a list may be huge
    for p in params:
        for value in p.examples():
            trial_config(base, {p.key: value}, "check", base.output.dir,
                         f"{source} params.{p.key}")

    metric = data.get("metric", base.train.monitor)
    if not isinstance(metric, str) or not metric.startswith("val_"):
        raise UserError(f"metric {metric!r}, {source}, expected a validation quantity such as "
                        "val_loss or val_accuracy (the test split stays unseen by the search)")
    direction = data.get("direction",
                         "maximize" if monitor_mode(metric) == "max" else "minimize")
    if direction not in ("minimize", "maximize"):
        raise UserError(f"direction {direction!r}, {source}, expected minimize or maximize")

    # A grid promises every combination trained to its end; pruning is asked for by name there.
    pruning = data.get("pruning", {} if any(p.kind != "grid" for p in params) else False)
    if pruning is True:
        pruning = {}
    if pruning is False:
        prune = Pruning(enabled=False)
    elif isinstance(pruning, dict):
        for key, value in pruning.items():
            if key not in _PRUNING_KEYS:
                raise UserError(f"unknown key 'pruning.{key}', {source}, expected "
                                f"{' or '.join(_PRUNING_KEYS)}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"pruning.{key} is {value!r}, {source}, expected an integer >= 0")
        prune = Pruning(True, **pruning)
    else:
        raise UserError(f"pruning is {pruning!r}, {source}, expected a mapping "
                        "({startup_trials: N, warmup_epochs: N}), true or false")
    return Space(params, metric, direction, prune, source)


def load(path: str, base: Config) -> Space:
    from trainer import storage

    return parse(config_mod.parse_yaml(storage.read_text(path), path), base, path)


def objective_value(metrics: dict, metric: str) -> float:
    """`val_accuracy` -> metrics.json's val.accuracy (evaluated on the model the run kept)."""
    value = metrics.get("val", {}).get(metric[len("val_"):])
    return float(value) if value is not None else math.nan
