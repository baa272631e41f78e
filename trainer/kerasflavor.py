"""The one module that imports Keras.

The project uses tf-keras (Keras 2 API) because Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585). Every other module takes `keras` from here,
so switching flavour later is a one-file change.

TensorFlow's start-up notices (oneDNN, `cudart_stub`, `cuInit ... (303)` without a GPU) come from
its C++ logging: the first two before that logging is set up, so TF_CPP_MIN_LOG_LEVEL does not
stop them, and the third is an error only level 3 (which hides real errors too) would stop. They
are written straight to file descriptor 2. Unless the level asks for INFO (0), the import and the
first look at the devices run with descriptor 2 caught, and every caught line that is not one of
those notices is written back. TensorFlow's and Keras's Python warnings (the "tensorflow" logger,
on stderr through absl) follow the same level: 2 keeps errors only.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Must be set before TensorFlow first resolves `tf.keras`.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_NOTICE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IW]\d{4} .*\] (oneDNN custom operations are on|Could not find cuda drivers"
    r"|This TensorFlow binary is optimized|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered|TF-TRT Warning)"
    r"|^E\d{4} .*\] failed call to cuInit: .*\((303|100)\)"
    r"|^E\d{4} .*\] Unable to register cu(DNN|FFT|BLAS) factory")


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


class _AtTheLevel(logging.Filter):
    """Records of TensorFlow's Python logger at or above what TF_CPP_MIN_LOG_LEVEL lets through."""

    def __init__(self, level: int):
        super().__init__()
        self.levelno = {1: logging.WARNING, 2: logging.ERROR}.get(level, logging.CRITICAL)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.levelno


@contextlib.contextmanager
def _start_up_notices_caught():
    if _min_log_level() <= 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(True)
                    if not _NOTICE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


with _start_up_notices_caught():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # CUDA's start (cuInit) logs here on a machine without a GPU

if _min_log_level() > 0:
    logging.getLogger("tensorflow").addFilter(_AtTheLevel(_min_log_level()))


__all__ = ["keras", "tf"]
