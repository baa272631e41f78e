"""TensorBoard logs that reach the run's bucket after every epoch: on the cloud a job can be
stopped at any moment, and what was logged up to the last finished epoch is then already there."""

from __future__ import annotations

from trainer.kerasflavor import keras
from trainer.kerasinternals import tensorboard_writers
from trainer.storage.rundir import RunDir


class LiveTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, writing into the run's `tensorboard/` folder and uploading
    it after each epoch when the run lives in a bucket (TensorFlow cannot write `gs://` through
    fsspec, and streaming into the final objects would be unsafe)."""

    def __init__(self, run: RunDir, **kwargs):
        super().__init__(log_dir=run.live_dir("tensorboard"), **kwargs)
        self.run = run

    def _publish(self) -> None:
        for writer in tensorboard_writers(self):
            writer.flush()
        self.run.publish_tree("tensorboard")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._publish()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # closes the writers
        self.run.publish_tree("tensorboard")
