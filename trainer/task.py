"""`python -m trainer.task --config FILE.yaml [--set key=value ...] [--output_dir DIR]`.

With no `--config` it trains the embedded demo. Bad input ends with one `error: ...` line on
stderr and exit status 2 (and, with JSON logging, an ERROR record on stdout); nothing else is
parsed or decided here. The platform (local, Vertex AI, a multi-worker cluster) is detected here,
once, and handed to the job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Sequence

from absl import flags

from trainer import cli
from trainer.errors import UserError
from trainer.outputs.table import number
from trainer.runtime import logs, secrets
from trainer.runtime.platform import Platform, detect

if TYPE_CHECKING:
    from trainer.job import RunResult

FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The run's YAML config file; without it, the embedded demo.")
flags.DEFINE_string("output_dir", None, "Where the run goes (overrides output.dir and, on "
                    "Vertex AI, the AIP_* directories).", flag_values=FLAGS)
flags.DEFINE_enum("log_format", "auto", ["auto", "text", "json"],
                  "Log records on stdout: readable text, or one JSON object per line for Cloud "
                  "Logging. auto: json on Vertex AI, text elsewhere.", flag_values=FLAGS)

log = logging.getLogger("trainer")


def train(config_path: Optional[str], overrides: Sequence[str], output_dir: Optional[str],
          log_format: str = "auto", platform: Optional[Platform] = None) -> int:
    """Build the config, run the job on `platform` (detected here, once, unless the caller has
    read it already), report where the artefacts went; returns the exit status."""
    from trainer import config as config_mod

    structured = log_format == "json"
    try:
        platform = detect() if platform is None else platform
        structured = structured or (log_format == "auto" and platform.vertex)
        logs.setup_logging(structured=structured, labels=platform.log_labels())
        if platform.vertex:
            log.info("Vertex AI job %s%s", platform.job_id or "(no CLOUD_ML_JOB_ID)",
                     f", trial {platform.trial_id}" if platform.trial_id else "")
        platform = platform.with_output_dir(output_dir)
        cfg = config_mod.load(config_path, overrides, output_dir)
        from trainer import job

        result = job.run(cfg, platform)
    except UserError as exc:
        cli.print_error(exc)
        if structured:
            log.error("error: %s", exc)  # Cloud Logging: ERROR severity, the same one line
        return exc.exit_code
    _report(result, structured)
    return 0


def _report(result: "RunResult", structured: bool) -> None:
    """Where the artefacts went: printed lines, or one log record when stdout is JSON lines."""
    test = result.metrics.get("test", {})
    if structured:  # stdout holds JSON lines only
        log.info("run: %s", result.run_dir, extra={"json_fields": {
            "run_dir": result.run_dir, "outputs": result.outputs, "test": test}})
        return
    print(secrets.redact_text(f"run: {result.run_dir}"))
    for key, label in (("model", "model"), ("saved_model", "serving"), ("report", "report"),
                       ("metrics", "metrics"), ("history", "history"), ("plots", "plots"),
                       ("config", "config")):
        if key in result.outputs:
            print(secrets.redact_text(f"  {label + ':':9}{result.outputs[key]}"))
    print("  test:    " + ", ".join(f"{k}={number(v)}" for k, v in test.items()))


def _train_from_flags(args: list[str], platform: Optional[Platform] = None) -> int:
    return train(FLAGS.config, FLAGS.set, FLAGS.output_dir, FLAGS.log_format, platform)


main = cli.Command(_train_from_flags, FLAGS)


def run_entrypoint(platform: Optional[Platform] = None, **defaults: object) -> None:
    """Entry point shared by the thin wrappers, which differ only in their flag defaults (and,
    for a tuning trial, in the platform it has read already)."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)

    def body(args: list[str]) -> int:
        return _train_from_flags(args, platform)

    cli.Command(body, FLAGS).run()


if __name__ == "__main__":
    main.run()
