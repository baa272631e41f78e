"""The typed config of one training run, as a package of five parts:

- `schema`: the dataclasses, each field with its default, documentation and limits; `leaves`,
  the one walk over them;
- `values`: one value checked alone against its field, and the wording of config errors;
- `rules`: the defaults that depend on other keys, and the cross-field rules;
- `loading`: defaults -> YAML file -> `--set` overrides -> checks -> frozen `Config`;
- `resuming` and `docs`: what a resume may change, and the generated reference.

This module only re-exports, so `from trainer import config; config.load(...)` is the whole
interface callers need.
"""

from trainer.config.docs import reference_markdown, resume_markdown
from trainer.config.loading import (MAX_VALUES, apply_override, from_dict, load, load_raw,
                                    parse_yaml, set_key, with_values)
from trainer.config.resuming import flat, resume_kinds
from trainer.config.rules import (DEFAULT_LOSS, DEFAULT_METRICS, RULES, TASK_LOSSES, TASK_METRICS,
                                  absent_splits, carved_splits, logged_quantities)
from trainer.config.schema import (Config, DataConfig, EvalConfig, ModelConfig, OutputConfig,
                                   PathList, TrainConfig, leaves, monitor_mode)

__all__ = [
    "MAX_VALUES", "DEFAULT_LOSS", "DEFAULT_METRICS", "RULES", "TASK_LOSSES", "TASK_METRICS",
    "Config", "DataConfig", "EvalConfig", "ModelConfig", "OutputConfig", "PathList", "TrainConfig",
    "absent_splits", "apply_override", "carved_splits", "flat", "from_dict", "leaves", "load",
    "load_raw", "logged_quantities", "monitor_mode", "parse_yaml", "reference_markdown",
    "resume_kinds", "resume_markdown", "set_key", "with_values",
]
