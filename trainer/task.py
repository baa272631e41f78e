"""`python -m trainer.task --config FILE.yaml [--set key=value ...] [--output_dir DIR]`.

With no `--config` it trains the embedded demo. Bad input ends with one `error: ...` line on
stderr and exit status 2; nothing else is parsed or decided here.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import app, flags
from absl import logging as absl_logging

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "YAML config file: local path, gs:// URL or /gcs/ path.")
flags.DEFINE_multi_string("set", [], "Override one config key, e.g. --set train.epochs=3 "
                          "(value parsed as YAML). May repeat.")
flags.DEFINE_string("output_dir", None, "Where the run goes (overrides output.dir).")


def train(config_path: Optional[str], overrides: Sequence[str], output_dir: Optional[str]) -> int:
    """Build the config, run the job, print where the artefacts went; returns the exit status."""
    from trainer import config as config_mod
    from trainer.errors import UserError

    try:
        from trainer import environment, job

        environment.setup_logging()
        cfg = config_mod.load(config_path, overrides, output_dir)
        result = job.run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    test = result.metrics.get("test", {})
    print(f"run: {result.run_dir}")
    for key in ("model", "report", "metrics", "history", "plots", "config"):
        if key in result.outputs:
            print(f"  {key + ':':9}{result.outputs[key]}")
    print("  test:    " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    return 0


def main(argv: Sequence[str]) -> None:
    if not FLAGS["verbosity"].present:
        # absl's INFO would print TensorFlow's internals (every checkpoint shard); -v 0 brings it back.
        absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected argument {argv[1]!r}, command line, expected only flags "
              "(--config, --set, --output_dir)", file=sys.stderr)
        sys.exit(2)
    sys.exit(train(FLAGS.config, FLAGS.set, FLAGS.output_dir))


def run_entrypoint(**defaults: object) -> None:
    """Entry point shared by the thin wrappers, which differ only in their flag defaults."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)
    app.run(main)


if __name__ == "__main__":
    app.run(main)
