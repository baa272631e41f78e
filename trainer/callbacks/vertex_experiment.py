"""The run in a Vertex AI Experiment (`output.experiment`), logged by the chief through the
aiplatform SDK: the resolved config, flattened (`train.learning_rate`), as the run's parameters;
each epoch's metrics as time series when the experiment has a TensorBoard; the final val and
test metrics (`val_accuracy`, `test_loss`) as the run's metrics.

Logging is a guest of training, never its master: every call to Vertex AI runs in a thread of
its own, retried a few times within a deadline; a refusal, an outage or a call that hangs is
one warning line, after which the run logs nothing more and trains on.

Where the experiment run lives: a name alone is in the project and region of the Google Cloud
defaults (`gcloud config`, GOOGLE_CLOUD_PROJECT); `trainer.submit --experiment` hands the job
the full name. `TRAINER_VERTEX_API_ENDPOINT` points the SDK at another endpoint (an http:// one,
such as a local test server, is sent no credentials).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from trainer.cloud.experiments import EXPERIMENT, console_url, run_name, sdk_options
from trainer.kerasflavor import keras

log = logging.getLogger("trainer")

ENDPOINT_VARIABLE = "TRAINER_VERTEX_API_ENDPOINT"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as `{"train.learning_rate": 0.001, ...}`, in the types Experiments holds
    (numbers and text: lists as JSON, booleans as true/false; empty values left out)."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if value is None or value == [] or value == {}:
        return {}
    if isinstance(value, bool):
        return {prefix: str(value).lower()}
    if isinstance(value, (int, float, str)):
        return {prefix: value}
    return {prefix: json.dumps(value, default=str)}


class ExperimentLog(keras.callbacks.Callback):
    """Logs one run to a Vertex AI Experiment; `log_final` after evaluation ends the run."""

    attempts = 3  # tries of each call
    deadline_s = 60.0  # the longest training waits for one call, retries included

    def __init__(self, experiment: str, run: str, params: dict[str, Any],
                 endpoint: Optional[str] = None):
        super().__init__()
        match = EXPERIMENT.match(experiment)
        self.project, self.location, self.experiment = (match.groups() if match
                                                         else (None, None, experiment))
        self.run = run_name(run)
        self.config_params = params  # not `params`: Keras sets that
        self.endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_VARIABLE)
        self.url: Optional[str] = None  # the console page, once the run is started
        self.failed = False
        self._tracker = None
        self._time_series = False
        self._started = False

    # -- the calls, guarded ------------------------------------------------------------------

    def _guarded(self, what: str, call: Callable[[], Any]) -> Any:
        """`call()` in a thread, retried within the deadline; a failure is one warning line,
        after which nothing more is sent."""
        if self.failed:
            return None
        end = time.monotonic() + self.deadline_s
        error: Optional[BaseException] = None
        for attempt in range(self.attempts):
            box: dict[str, Any] = {}

            def target():
                try:
                    box["value"] = call()
                except BaseException as exc:  # noqa: BLE001 - reported below, never raised
                    box["error"] = exc

            worker = threading.Thread(target=target, daemon=True, name="vertex-experiment")
            worker.start()
            worker.join(max(0.0, end - time.monotonic()))
            if "value" in box or (not worker.is_alive() and "error" not in box):
                return box.get("value")
            error = box.get("error") or TimeoutError(f"no answer in {self.deadline_s:.0f} s")
            if worker.is_alive() or time.monotonic() + 2 ** attempt > end:
                break
            time.sleep(2 ** attempt * 0.5)
        self.failed = True
        text = " ".join(str(error).split())[:300]
        log.warning("Vertex AI Experiments: cannot %s (%s: %s); the run trains on without "
                    "logging to experiment %s", what, type(error).__name__, text, self.experiment)
        return None

    def _start(self) -> None:
        from google.cloud import aiplatform
        from google.api_core import exceptions

        # The experiment's own TensorBoard, if it has one, takes the time series; none is
        # created for it (the SDK's default would create one).
        options = {"experiment": self.experiment, "experiment_tensorboard": False,
                   **sdk_options(self.endpoint)}
        if self.project:
            options.update(project=self.project, location=self.location)
        aiplatform.init(**options)
        try:  # a run `trainer.submit` created, or this run resumed
            run = aiplatform.start_run(self.run, resume=True)
        except exceptions.NotFound:
            run = aiplatform.start_run(self.run)
        self._tracker = aiplatform
        self._time_series = getattr(run, "_backing_tensorboard_run", None) is not None
        self.url = console_url(run.project, run.location, self.experiment, self.run)
        self._tracker.log_params(self.config_params)

    # -- Keras -------------------------------------------------------------------------------

    def start(self) -> Optional[str]:
        """Start (or resume) the run and log its parameters; the console URL, or None."""
        if not self._started:
            self._started = True
            self._guarded("start the experiment run", self._start)
            if self.url and not self.failed:
                log.info("Vertex AI experiment run: %s", self.url)
        return None if self.failed else self.url

    def on_train_begin(self, logs=None):
        self.start()

    def on_epoch_end(self, epoch, logs=None):
        if not self._time_series or self.failed:
            return
        values = {k: float(v) for k, v in (logs or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            self._guarded("log the epoch's metrics",
                          lambda: self._tracker.log_time_series_metrics(values, step=epoch + 1))

    def log_final(self, metrics: dict) -> None:
        """The final val and test metrics, as `val_<metric>` and `test_<metric>`; ends the run."""
        self.start()  # a run with nothing left to train still logs its figures
        if self.failed:
            return
        final = {f"{split}_{name}": float(value)
                 for split in ("val", "test") for name, value in (metrics.get(split) or {}).items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)}

        def finish():
            if final:
                self._tracker.log_metrics(final)
            self._tracker.end_run()

        self._guarded("log the final metrics", finish)


def from_config(config, platform) -> Optional[ExperimentLog]:
    """The chief's experiment log when the config names an experiment (None otherwise)."""
    output = config.output
    if not output.experiment or not platform.is_chief:
        return None
    from trainer.runtime import secrets

    params = flatten(secrets.redact(config.to_dict()))
    return ExperimentLog(output.experiment, output.experiment_run or config.name, params)
