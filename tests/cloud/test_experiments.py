"""Vertex AI Experiments: what the chief logs through the real aiplatform SDK, recorded by the
local stand-in for the API; and that no refusal, outage or silence of the API holds training."""

import json
import logging
import socket
import time

import pytest

from conftest import run_job
from vertex_recorder import PARENT, Recorder
from trainer import submit
from trainer.callbacks.vertex_experiment import ENDPOINT_VARIABLE, ExperimentLog, flatten

TB = f"{PARENT}/tensorboards/77"
EXPERIMENT = f"{PARENT}/metadataStores/default/contexts/exp1"


def _bodies(recorder, method: str, suffix: str) -> list[dict]:
    return [json.loads(r["body"]) for r in recorder.requests
            if r["method"] == method and r["path"].split("?")[0].endswith(suffix)]


def test_a_run_logs_its_config_metrics_and_epochs_to_its_experiment(tmp_path, monkeypatch):
    recorder = Recorder(resources={TB: {"name": TB, "displayName": "board"}})
    try:
        # as `trainer.submit --experiment exp1 --tensorboard TB` leaves it before the job starts
        submit.create_experiment_run(submit.Experiment("my-project", "europe-west4", "exp1",
                                                       "run-1", TB), recorder.endpoint)
        monkeypatch.setenv(ENDPOINT_VARIABLE, recorder.endpoint)
        result, cfg = run_job(tmp_path, "train.epochs=2", "data.samples_per_class=20",
                              "model.name=tiny_cnn", "output.plots=false",
                              f"output.experiment={EXPERIMENT}", "output.experiment_run=run-1")
        run = recorder.resources[f"{EXPERIMENT}-run-1"]["metadata"]
        params, logged = run["_params"], run["_metrics"]
        expected = flatten(cfg.to_dict())
        assert expected["train.epochs"] == 2 and expected["model.name"] == "tiny_cnn"
        assert params == pytest.approx(expected)  # every key of the resolved config
        metrics = json.loads((tmp_path / cfg.name / "metrics.json").read_text())
        final = {f"{split}_{k}": v for split in ("val", "test") for k, v in metrics[split].items()
                 if isinstance(v, (int, float))}
        assert set(final) >= {"val_loss", "val_accuracy", "test_loss", "test_accuracy"}
        assert logged == pytest.approx(final)
        assert run["_state"] == "COMPLETE"
        # each epoch's metrics as time series, at its step
        writes = _bodies(recorder, "POST", "/runs/run-1:write")
        steps = [[v["step"] for v in w["timeSeriesData"][0]["values"]] for w in writes]
        assert steps == [["1"], ["2"]]
        history = (tmp_path / cfg.name / "history.csv").read_text().splitlines()
        assert len(history) == 3
        # the run's page in the log, metrics.json and the report
        url = ("https://console.cloud.google.com/vertex-ai/experiments/locations/europe-west4/"
               "experiments/exp1/runs/exp1-run-1?project=my-project")
        assert metrics["training"]["experiment_run"] == url
        assert url in (tmp_path / cfg.name / "report.html").read_text()
    finally:
        recorder.close()


def test_flattened_values_are_what_experiments_hold():
    nested = {"a": {"b": 1, "c": [1, 2], "d": None, "e": True, "f": {"g": "x"}}, "h": 0.5}
    assert flatten(nested) == {"a.b": 1, "a.c": "[1, 2]", "a.e": "true", "a.f.g": "x", "h": 0.5}


class _Silent:
    """A server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


DENIED = (403, {"code": 403, "status": "PERMISSION_DENIED",
                "message": "Permission 'aiplatform.metadataStores.get' denied"})


@pytest.mark.parametrize("kind", ["refused", "outage", "silent"])
def test_no_refusal_outage_or_silence_holds_training(kind, monkeypatch):
    """One warning line, within the deadline; after it, nothing more is sent or waited for."""
    server = {"refused": lambda: Recorder(DENIED), "silent": _Silent}.get(kind)
    server = server() if server else None
    endpoint = server.endpoint if server else _closed_port()
    monkeypatch.setattr(ExperimentLog, "deadline_s", 4.0)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("trainer")
    logger.addHandler(handler)
    try:
        started = time.monotonic()
        callback = ExperimentLog(EXPERIMENT, "run-1", {"train.epochs": 2}, endpoint=endpoint)
        callback.on_train_begin()
        first = time.monotonic() - started
        sent = len(server.requests) if isinstance(server, Recorder) else 0
        for epoch in range(3):
            callback.on_epoch_end(epoch, {"loss": 0.5})
        callback.log_final({"val": {"loss": 0.4}, "test": {"loss": 0.3}})
        after = time.monotonic() - started - first
    finally:
        logger.removeHandler(handler)
        if server:
            server.close()
    assert first < 4.0 + 1.0, first  # the deadline, retries included
    assert after < 0.1, after  # nothing waited for after the warning
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and callback.failed and callback.url is None
    assert warnings[0].getMessage().startswith(
        "Vertex AI Experiments: cannot start the experiment run (")
    assert warnings[0].getMessage().endswith("the run trains on without logging to experiment exp1")
    if isinstance(server, Recorder):
        assert 1 <= sent <= ExperimentLog.attempts * 3 and len(server.requests) == sent
