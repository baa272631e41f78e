"""Using a saved model: `python -m trainer.predict` (the command: `trainer.predict.command`).

The parts below the command, which batch curation (`trainer.curation`) uses too:
- `model`: `model.h5` (or a run folder's) loaded with its metadata;
- `inputs`: the image files, videos and shards the arguments name;
- `readers`: each input read as the model's input, one at a time;
- `batching`: predictions in batches;
- `results`: the CSV and `.mat` files, published whole.
The command imports `trainer.curation`, which imports these parts: so this package's `__init__`
re-exports the parts only, never the command.
"""

from trainer.predict.batching import Prediction, format_row, predict, predict_files
from trainer.predict.inputs import SHARD_EXTENSIONS, input_files
from trainer.predict.model import SavedModel, load, model_file
from trainer.predict.readers import Progress, read_image, read_inputs, read_shard, read_video
from trainer.predict.results import Results, check_output_path

__all__ = ["SHARD_EXTENSIONS", "Prediction", "Progress", "Results", "SavedModel", "check_output_path",
           "format_row",
           "input_files", "load", "model_file", "predict", "predict_files", "read_image",
           "read_inputs", "read_shard", "read_video"]
