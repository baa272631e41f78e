"""`config.yaml`, the config a run used: written beside the model, and shown in the report."""

from __future__ import annotations

from trainer import config as config_module
from trainer.config import Config
from trainer.data import Splits
from trainer.training.fit import TrainResult


def config_yaml(config: Config, splits: Splits, result: TrainResult) -> str:
    """The config the run used (`data.image_size` as the data decided; keys changed in a re-run
    with nothing left to train keep the values the epochs had), headed by the changes it
    resumed with, as comments: the file stays a config `--config` loads."""
    used = config_module.with_values(config, result.kept) if result.kept else config
    header = "".join(f"# {line}\n" for line in result.changes)
    if header:
        header = "# resumed with changes, each in effect from the epoch named:\n" + header
    return header + used.with_data_shape(splits.input_shape).to_yaml()
