"""No credential in what the package writes or prints.

Fake credentials, all sharing one distinctive core, are planted where a user's would be: a GCS
token in fsspec's storage options (which gcsfs then really sends to the emulator), a service-account
key in GOOGLE_APPLICATION_CREDENTIALS, and several secret-named environment variables. The real
command-line tools run (training with JSON and text logs, failing runs, the submission spec, the
tuning-job spec), and their stdout, stderr and every byte of every file they wrote (model.h5's
attributes, TensorBoard event files, the report, the study) are searched for the core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, blob_images, error_line, run_cli, write_npz
from trainer import config
from trainer.runtime import secrets

CORE = "7d1c0ffee"  # in every planted secret; found nowhere else
TOKEN = f"ya29.FAKE-{CORE}-gcs"
PLANTED = {
    "FOO_TOKEN": f"foo-{CORE}-token",
    "AWS_SECRET_ACCESS_KEY": f"aws/{CORE}+secret",
    "DATABASE_PASSWORD": f"pw-{CORE}",
    "GCS_OAUTH_TOKEN": TOKEN,
}
SMALL = ["model.name=tiny_cnn", "train.epochs=1", "train.batch_size=32"]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> str:
    """A service-account key as Google issues them (fake), outside every output folder."""
    path = tmp_path_factory.mktemp("creds") / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": f"id-{CORE}",
        "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIE{CORE}AAAA\n-----END PRIVATE KEY-----\n",
        "client_email": "trainer@p.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token"}))
    return str(path)


def python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def planted_env(key_file: str, **extra: str) -> dict:
    # gcsfs checks a raw token against Google's token-info service unless told not to (offline).
    return {**PLANTED, "GOOGLE_APPLICATION_CREDENTIALS": key_file, "FSSPEC_GS_TOKEN": TOKEN,
            "FETCH_RAW_TOKEN_EXPIRY": "false", **extra}


def assert_no_secret(where: str, data) -> None:
    data = data if isinstance(data, bytes) else str(data).encode()
    assert CORE.encode() not in data, f"a planted credential in {where}"


def assert_no_secret_in_tree(root: str) -> int:
    """Search every file under `root`, byte for byte; returns how many were searched."""
    count = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                assert_no_secret(path, f.read())
            count += 1
    return count


@pytest.fixture(scope="module")
def bucket_data(gcs, tmp_path_factory) -> str:
    from trainer import storage

    x, label, _ = blob_images(160, seed=5)
    local = tmp_path_factory.mktemp("shards")
    for i in range(2):
        path = write_npz(local, f"s{i}.npz", x[i::2], label[i::2])
        storage.put_file(path, gcs.url("secrets/data", f"s{i}.npz"))
    return gcs.url("secrets/data/*.npz")


def test_gcsfs_really_uses_the_planted_storage_token(gcs, key_file):
    """The storage options reach gcsfs: its credentials are the planted token, not anonymous."""
    code = ("from trainer.storage.paths import filesystem; fs, _ = filesystem('gs://b/x'); "
            "print(fs.credentials.credentials.token)")
    proc = python(code, {**gcs.env(), **planted_env(key_file)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == TOKEN


def test_training_runs_and_writes_no_credential(gcs, bucket_data, key_file, tmp_path):
    env = {**gcs.env(), **planted_env(key_file)}
    common = ["--set", "data.format=npz", "--set", f"data.train={bucket_data}",
              *[a for s in SMALL for a in ("--set", s)]]
    # JSON logs, the run written to the bucket (uploaded with the planted token)
    out_url = gcs.url("secrets/runs")
    json_run = run_cli(*common, "--set", "name=json", "--output_dir", out_url,
                       "--log_format=json", env=env)
    assert json_run.returncode == 0, json_run.stderr
    records = [json.loads(line) for line in json_run.stdout.splitlines() if line.strip()]
    assert any(r.get("message", "").startswith("run: gs://") for r in records)
    # text logs, the run written locally
    # (its folder's name holds a secret pair: redacted in everything printed and written)
    runs = tmp_path / f"run-password={CORE}x"
    text_run = run_cli(*common, "--set", "name=text", "--output_dir", str(runs),
                       "--log_format=text", env=env)
    assert text_run.returncode == 0, text_run.stderr
    assert "test:" in text_run.stdout
    for proc in (json_run, text_run):
        assert_no_secret("stdout", proc.stdout)
        assert_no_secret("stderr", proc.stderr)

    assert "run-password=[redacted]" in text_run.stdout
    local = runs / "text"
    assert (local / "model.h5").is_file() and (local / "report.html").is_file()
    assert any("tfevents" in n for _d, _s, files in os.walk(local) for n in files)
    assert assert_no_secret_in_tree(str(runs)) >= 8
    blobs = list(gcs.client().list_blobs(gcs.bucket, prefix="secrets/runs/json/"))
    names = {b.name.split("secrets/runs/json/", 1)[1] for b in blobs}
    assert {"model.h5", "config.yaml", "metrics.json", "report.html"} <= names
    for blob in blobs:
        assert_no_secret(blob.name, blob.download_as_bytes())


def test_a_token_in_the_storage_options_is_not_quoted_when_it_fails(key_file, tmp_path):
    """Without the emulator gcsfs checks the raw token with Google, which cannot be reached
    here; the library's error quotes the token in the URL it tried. One line, redacted."""
    env = {k: v for k, v in planted_env(key_file).items() if k != "FETCH_RAW_TOKEN_EXPIRY"}
    env["STORAGE_EMULATOR_HOST"] = ""
    proc = run_cli("--set", "data.format=npz", "--set", "data.train=gs://no-such-bucket/x.npz",
                   "--output_dir", str(tmp_path / "runs"), env=env)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "gs://no-such-bucket/x.npz" in line and "access_token=[redacted]" in line
    assert_no_secret("stderr", proc.stderr)
    assert_no_secret("stdout", proc.stdout)


def test_a_secret_pasted_into_a_config_value_is_not_echoed(key_file, tmp_path):
    proc = run_cli("--set", f"train.epochs={PLANTED['FOO_TOKEN']}", "--set",
                   f"model.dropout={TOKEN}", "--output_dir", str(tmp_path),
                   "--log_format=json", env=planted_env(key_file))
    assert proc.returncode == 2
    assert "invalid value '[redacted]' for 'train.epochs'" in error_line(proc.stderr)
    assert_no_secret("stderr", proc.stderr)
    assert_no_secret("stdout (the ERROR record)", proc.stdout)
    assert json.loads(proc.stdout.splitlines()[-1])["severity"] == "ERROR"


def test_the_submitted_job_spec_holds_no_credential(key_file, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("name: blobs\ndata:\n  format: npz\n  train: gs://b/data/*.npz\n")
    args = ["--config", str(cfg), "--project", "p", "--staging_bucket", "gs://b/staging",
            "--display_name", "blobs-1", "--dry_run"]
    env = planted_env(key_file)
    spec = run_cli(*args, module="trainer.submit", env=env)
    assert spec.returncode == 0, spec.stderr
    job = json.loads(spec.stdout)
    assert job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"][:1] == ["--config"]
    assert_no_secret("the job spec", spec.stdout + spec.stderr)
    # a credential handed to the job through the config is refused, not stored by Vertex AI
    refused = run_cli(*args, "--set", f"model.params.api_token={TOKEN}", module="trainer.submit",
                      env=env)
    assert refused.returncode == 2
    assert "model.params.api_token" in error_line(refused.stderr)
    assert_no_secret("the refusal", refused.stdout + refused.stderr)


def test_the_tuning_job_spec_holds_no_credential(key_file, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_accuracy\nparams:\n  train.learning_rate: [0.001, 0.01]\n")
    proc = run_cli("--vertex", "--dry_run", "--space", str(space), "--output_dir", "gs://b/tune",
                   "--project", "p", module="trainer.tune", env=planted_env(key_file))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trialJobSpec"]["workerPoolSpecs"]
    assert_no_secret("the tuning job spec", proc.stdout + proc.stderr)


def test_a_traceback_is_printed_with_its_credentials_redacted(tmp_path):
    """A bug's traceback stays (it is not bad input), minus what it quotes of a credential."""
    code = ("from trainer.runtime import secrets; secrets.install_excepthook(); "
            f"raise RuntimeError('GET https://user:{TOKEN}@host/x failed')")
    proc = python(code, {"FOO_TOKEN": PLANTED["FOO_TOKEN"]})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "https://user:[redacted]@host/x" in proc.stderr
    assert_no_secret("stderr", proc.stderr)


@pytest.mark.parametrize("text, shown", [
    ("https://user:s3cret-pass@host/a.npz", "https://user:[redacted]@host/a.npz"),
    ("https://ghp_tokenvalue@github.com/x", "https://[redacted]@github.com/x"),
    ("gs://b/o?alt=media&access_token=abc.def&x=1",
     "gs://b/o?alt=media&access_token=[redacted]&x=1"),
    ("https://h/o?X-Goog-Signature=ab12&X-Goog-Credential=me%40p",
     "https://h/o?X-Goog-Signature=[redacted]&X-Goog-Credential=[redacted]"),
    ('{"client_secret": "abc", "n": 1}', '{"client_secret": "[redacted]", "n": 1}'),
    ("{'private_key_id': 'abc'}", "{'private_key_id': '[redacted]'}"),
    ("Authorization: Bearer abc.def", "Authorization: [redacted] [redacted]"),
    ("key ya29.A0ARrdaM-xyz_1 expired", "key [redacted] expired"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY-----", "[redacted]"),
    # a password that holds `/` or `:` (a URL parser takes it for the host's end or a port)
    ("https://alice:Sup3r/S3cretPw@host/x.npz", "https://alice:[redacted]@host/x.npz"),
    ("s3://k:a:b/c@h/o", "s3://k:[redacted]@h/o"),
    # one pair inside the value of another
    ("run: /x/run-password=Hunter", "run: /x/run-password=[redacted]"),
    ("name=run-password=HunterHunter22", "name=run-password=[redacted]"),
    ("a: b: c: api_token=t0k", "a: b: c: api_token=[redacted]"),
    ("data.train=https://token:pw@h/x", "data.train=https://token:[redacted]@h/x"),
    ("password=ab[cd ok", "password=[redacted] ok"),
    # left alone: config keys and paths that only look like names of secrets
    ("data.x_key=x, data.group_key: video, gs://b/runs/demo",
     "data.x_key=x, data.group_key: video, gs://b/runs/demo"),
])
def test_redact_text_forms(text, shown):
    assert secrets.redact_text(text) == shown


_PASSWORD_CHARS = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@'\"")


@settings(deadline=None, max_examples=60)
@given(password=st.text(_PASSWORD_CHARS, min_size=1, max_size=24), user=st.sampled_from(
    ["token", "auth", "key"]) | st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True), where=st.sampled_from(
    ["{}", "reading {} failed", "'{}'", "data.train={}", "run: {}/out"]))
def test_a_url_password_never_survives_redaction(password, user, where):
    text = where.format(f"https://{user}:{password}@host.example/d/x.npz")
    assert secrets.redact_text(text) == where.format(
        f"https://{user}:[redacted]@host.example/d/x.npz")


@settings(deadline=None, max_examples=60)
@given(outer=st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True), min_size=1,
                      max_size=4),
       seps=st.lists(st.sampled_from(["=", ": ", ":", "=/x/", ": /a/b/"]), min_size=4,
                     max_size=4),
       value=st.from_regex(r"[A-Za-z0-9]{8,16}", fullmatch=True))
def test_a_secret_pair_nested_in_other_pairs_is_redacted(outer, seps, value):
    outer = [name for name in outer if not secrets.secret_name(name)] or ["run"]
    text = "".join(f"{name}{sep}" for name, sep in zip(outer, seps)) + f"run-password={value}"
    assert secrets.redact_text(text).endswith("run-password=[redacted]"), text


def test_a_piece_of_a_used_url_password_is_redacted_from_a_traceback():
    """A library that cannot parse the URL quotes a piece of its password alone (the "port"
    `Sup3r`); the storage layer notes the URL's password before handing it over. Tracebacks of
    the main thread, of other threads and of finalizers are redacted alike, and so are warnings
    and the records of a library's logger that has no handler."""
    code = ("import threading\nfrom trainer.storage.paths import filesystem\n"
            "from trainer.runtime import secrets\n"
            "secrets.install_excepthook()\n"
            "filesystem('https://alice:Sup3r/S3cretPw@host/x.npz')\n"
            "t = threading.Thread(target=lambda: int('Sup3r'))\nt.start()\nt.join()\n"
            "import logging, warnings\nwarnings.warn('port Sup3r of host S3cretPw')\n"
            "logging.getLogger('a.library').error('no port Sup3r')\n"
            "class F:\n def __del__(self): raise ValueError('port S3cretPw')\n"
            "F()\nraise ValueError(\"invalid literal for int() with base 10: 'Sup3r'\")")
    proc = python(code, {})
    assert proc.returncode == 1
    assert proc.stderr.count("Traceback") == 3, proc.stderr
    assert "with base 10: '[redacted]'" in proc.stderr
    assert "UserWarning: port [redacted] of host [redacted]" in proc.stderr
    assert "no port [redacted]" in proc.stderr
    assert "Sup3r" not in proc.stderr and "S3cretPw" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("module", ["trainer.task", "trainer.datacheck"])
@pytest.mark.parametrize("host", ["127.0.0.1:9", "no-such-host.invalid"])
def test_unreachable_https_data_is_one_line_without_its_password(tmp_path, module, host):
    url = f"https://alice:Sup3r/S3cretPw@{host}/x.npz"
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={url}",
                   *(["--output_dir", str(tmp_path)] if module == "trainer.task" else []),
                   module=module)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc.stderr)
    assert f"https://alice:[redacted]@{host}/x.npz failed" in line
    assert "Sup3r" not in proc.stdout + proc.stderr and "S3cretPw" not in proc.stdout + line


def test_the_written_config_and_metrics_are_redacted_but_numbers_stay():
    cfg = config.from_dict({"model": {"params": {"api_token": TOKEN, "token_dim": 64}},
                            "data": {"format": "npz", "train": ["https://u:pw-9f8e7d@h/a.npz"]}})
    written = yaml.safe_load(cfg.to_yaml())
    assert written["model"]["params"] == {"api_token": "[redacted]", "token_dim": 64}
    assert written["data"]["train"] == ["https://u:[redacted]@h/a.npz"]
    assert cfg.model.params["api_token"] == TOKEN  # the job itself still gets the value
    assert secrets.find(cfg.to_dict()) == ["data.train[0]", "model.params.api_token"]


def test_environment_secrets_are_found_by_name_and_inside_json(monkeypatch, tmp_path):
    env = {"FOO_TOKEN": "abcdefgh1", "PATH": "/usr/bin", "SHORT_TOKEN": "1",
           "FSSPEC_GS": json.dumps({"token": "jsontoken-xyz", "project": "p"}),
           "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path)}
    assert sorted(secrets.environment_secrets(env)) == ["abcdefgh1", "jsontoken-xyz"]
    monkeypatch.setenv("MY_PASSWORD", "hunter2hunter2")
    assert secrets.redact_text("login with hunter2hunter2") == "login with [redacted]"


@pytest.mark.parametrize("structured", [True, False])
def test_log_records_are_redacted_message_traceback_and_fields(capsys, monkeypatch, structured):
    import logging

    from trainer.runtime import logs

    monkeypatch.setenv("FOO_TOKEN", PLANTED["FOO_TOKEN"])
    log = logging.getLogger("trainer")
    logs.setup_logging(structured=structured)
    try:
        log.warning("reading %s", f"https://u:{TOKEN}@h/a.npz",
                    extra={"json_fields": {"token": TOKEN, "n": 3}})
        try:
            raise ValueError(f"refused {PLANTED['FOO_TOKEN']}")
        except ValueError:
            log.exception("failed")
    finally:
        logs.setup_logging()
    out = capsys.readouterr().out
    assert "https://u:[redacted]@h/a.npz" in out and "ValueError: refused [redacted]" in out
    assert_no_secret("the log", out)
    if structured:
        records = [json.loads(line) for line in out.splitlines()]
        (reading,) = [r for r in records if r["message"].startswith("reading")]
        assert reading["token"] == "[redacted]" and reading["n"] == 3


def test_a_secret_pair_in_a_name_is_redacted_in_the_model_file_and_the_report(tmp_path):
    """A name or folder such as `run-password=...` reaches model.h5's metadata and every text of
    report.html only through the redaction."""
    import h5py

    from trainer.kerasflavor import keras
    from trainer.outputs import html_parts, modelfile

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    modelfile.save(model, str(tmp_path / "model.h5"),
                   {"name": f"run-password={CORE}", "class_names": [f"c: token={CORE}"]})
    with h5py.File(tmp_path / "model.h5") as f:
        metadata = json.loads(f.attrs[modelfile.METADATA_ATTR])
    assert metadata == {"name": "run-password=[redacted]", "class_names": ["c: token=[redacted]"]}
    assert html_parts.esc(f"/x/run-password={CORE} <b>") == "/x/run-password=[redacted] &lt;b&gt;"
