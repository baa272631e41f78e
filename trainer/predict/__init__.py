"""Using a saved model: `python -m trainer.predict` (see `trainer.predict.command`)."""

from trainer.predict.command import (  # noqa: F401
    FLAGS, MAX_BATCH, SHARD_EXTENSIONS, Prediction, Progress, Results, SavedModel, check_batch,
    check_output_path, format_row, input_files, load, main, model_file, predict, predict_files,
    read_image, read_inputs, read_shard, read_video, run)
