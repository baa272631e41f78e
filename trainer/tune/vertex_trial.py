"""Entry point of one Vertex AI tuning trial: `python -m trainer.tune.vertex_trial --config ...`.

Vertex AI passes each parameter as `--<parameter id>=<value>`, and the ids are config keys
(`--train.learning_rate=0.003`), which absl would refuse as unknown flags. They become `--set`
overrides here, the run is named after the trial, and the ordinary `trainer.task` entry point
does the rest, on the platform read here.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from trainer import cli, task
from trainer.errors import UserError
from trainer.runtime import secrets
from trainer.runtime.platform import detect


def hyperparameter_args(argv: Sequence[str], trial_id: Optional[str]) -> list[str]:
    """argv with `--a.b=v` turned into `--set=a.b=v`, plus the trial's run name."""
    out = [argv[0]]
    for arg in argv[1:]:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else ""
        out.append(f"--set={arg[2:]}" if "." in key else arg)
    if trial_id:
        out.append(f"--set=name=trial-{trial_id}")
    return out


def main() -> None:
    """Read the platform once (the trial's id names the run), then run the task on it."""
    secrets.install_excepthook()  # before anything can fail: the platform is read first
    try:
        platform = detect()
    except UserError as exc:
        cli.print_error(exc)
        sys.exit(exc.exit_code)
    sys.argv = hyperparameter_args(sys.argv, platform.trial_id)
    task.run_entrypoint(platform)


if __name__ == "__main__":
    main()
