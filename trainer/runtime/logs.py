"""Where log records go: readable lines beside Keras's progress bars locally, one JSON object per
line for Cloud Logging on Vertex AI; credentials redacted from both."""

from __future__ import annotations

import logging
import sys
from typing import Mapping, Optional

from trainer.runtime import secrets

log = logging.getLogger("trainer")


class _CurrentStdout:
    """Writes to whatever `sys.stdout` is now (it may be replaced after set-up, as tests do)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


class _StdoutHandler(_CurrentStdout, logging.StreamHandler):
    """Readable lines; when Keras's progress bar holds the current line of the terminal, the bar's
    line is ended first, so the record is never written into the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        global _bar_open
        if _bar_open:
            _bar_open = False
            try:
                self.stream.write("\n")
            except (OSError, ValueError):  # a closed stream: emit reports it as usual
                pass
        super().emit(record)


_structured = False
_bar_open = False  # Keras's progress bar is drawn on the current, unfinished line of stdout


def progress_bar_open(is_open: bool) -> None:
    """Said by `trainer.callbacks.progress_line` as Keras draws and ends its bar's line."""
    global _bar_open
    _bar_open = is_open and interactive()


def setup_logging(level: int = logging.INFO, structured: bool = False,
                  labels: Optional[Mapping[str, str]] = None) -> None:
    """Log records go to stdout: readable lines beside Keras's progress bars, or, when
    `structured`, one JSON object per line (severity, message, the record's `json_fields`) that
    Cloud Logging parses from a Vertex AI container. stderr carries only problems."""
    global _structured
    # TensorFlow logs every checkpoint write at INFO through absl; keep its warnings only.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if structured:
        from google.cloud.logging.handlers import StructuredLogHandler

        class _StructuredStdout(_CurrentStdout, StructuredLogHandler):
            def emit_instrumentation_info(self):
                """The library's own record of its name and version, which it writes before the
                first record: not one of the job's, so stdout does not carry it."""

        handler: logging.Handler = _StructuredStdout(labels=dict(labels or {}))
    else:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(secrets.Redacting())
    _structured = structured
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def interactive() -> bool:
    """Whether progress bars make sense: a terminal is watching and stdout is not JSON lines."""
    return sys.stdout.isatty() and not _structured
