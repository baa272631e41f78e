"""Every command the README's "Run it on Vertex AI" shows must match the code it calls."""

import os
import re
import shlex

import pytest
import yaml

from conftest import ROOT
from trainer import submit, task
from trainer.errors import UserError

VARS = {"$PROJECT": "my-project", "$REGION": "us-central1", "$BUCKET": "gs://my-bucket",
        "$SA": "sa@my-project.iam.gserviceaccount.com", "$(git rev-parse HEAD)": "abc123"}


def _commands() -> list[str]:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Run it on Vertex AI"):text.index("## Configuration reference")]
    commands = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for name, value in VARS.items():
                line = line.replace(name, value)
            if line.strip():
                commands.append(" ".join(line.split()))
    return commands


def _module_args(prefix: str) -> list[list[str]]:
    found = []
    for command in _commands():
        words = shlex.split(command.rstrip("&"))
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # leading VAR=value assignments
        if words[:3] == ["python", "-m", prefix]:
            found.append(words[3:])
    return found


def test_the_section_shows_submit_task_gcloud_and_cloud_build():
    commands = " ".join(_commands())
    for needle in ("python -m trainer.submit", "python -m trainer.task", "gcloud builds submit",
                   "gcloud ai custom-jobs create", "gcloud ai custom-jobs stream-logs",
                   "python -m gcp_storage_emulator start"):
        assert needle in commands, needle


def test_submit_commands_parse():
    calls = _module_args("trainer.submit")
    assert len(calls) >= 3
    for args in calls:
        try:
            submit.main.parse(args)
        except UserError as exc:
            pytest.fail(f"README: python -m trainer.submit {' '.join(args)}: {exc}")


def test_task_commands_use_defined_flags():
    calls = _module_args("trainer.task")
    assert calls
    for args in calls:
        for word in args:
            if word.startswith("--"):
                assert word[2:].split("=")[0] in task.FLAGS, word


def test_gcloud_and_log_commands_are_the_ones_submit_prints():
    commands = _commands()
    create = next(c for c in commands if c.startswith("gcloud ai custom-jobs create"))
    (args,) = [a for a in _module_args("trainer.submit") if "--gcloud_yaml" in a]
    submit.main.parse(args)
    parsed = submit.FLAGS
    assert create == submit.gcloud_command(parsed, parsed.display_name, parsed.gcloud_yaml)
    logs = next(c for c in commands if c.startswith("gcloud ai custom-jobs stream-logs"))
    assert logs == "gcloud ai custom-jobs stream-logs JOB_ID --project=my-project --region=us-central1"


def test_cloud_build_command_names_real_substitutions():
    build = next(c for c in _commands() if c.startswith("gcloud builds submit"))
    assert "--config cloudbuild.yaml" in build
    given = re.search(r"--substitutions=(\S+)", build).group(1)
    defined = set(yaml.safe_load(open(os.path.join(ROOT, "cloudbuild.yaml")))["substitutions"])
    for pair in given.split(","):
        key = pair.split("=")[0]
        assert key == "COMMIT_SHA" or key in defined, key
