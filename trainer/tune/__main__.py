"""`python -m trainer.tune --config FILE --space SPACE.yaml [--trials N] [--parallel K]`.

Runs the search into `<output dir>/<study name>/` and ends with the ranked table; run the same
command again after an interruption and it carries on. `--vertex [--dry_run]` builds (and
submits) the same search as a Vertex AI hyperparameter tuning job instead.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import flags

from trainer import cli
from trainer.cloud import machine_flags, vertex_job
from trainer.errors import UserError

FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The base YAML config of every trial; without it, the embedded "
                        "demo.")
flags.DEFINE_string("space", None, "The search space YAML (see trainer/tune/space.py).",
                    flag_values=FLAGS)
flags.DEFINE_integer("trials", None, "Trials in all (default: the whole grid, or 10 when "
                     "anything is sampled). Raising it on a resumed search adds trials.",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("parallel", 1, "Trials run at once (worker processes).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where the study directory goes (overrides output.dir).",
                    flag_values=FLAGS)
flags.DEFINE_string("study_name", None, "The study directory's name (default: <name>-tune).",
                    flag_values=FLAGS)
flags.DEFINE_bool("verbose", False, "Show each trial's own log lines, not only one per trial.",
                  flag_values=FLAGS)
flags.DEFINE_bool("vertex", False, "Build a Vertex AI hyperparameter tuning job instead.",
                  flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "With --vertex: print the job spec, submit nothing.",
                  flag_values=FLAGS)
machine_flags.define(FLAGS, note="With --vertex: ")


def _target(space, trials: Optional[int]) -> int:
    if trials is None:
        return space.default_trials()
    if space.grid_only and trials > space.default_trials():
        print(f"note: the grid has {space.default_trials()} points; running those, not {trials}")
        return space.default_trials()
    return trials


def local_search(cfg, space, study_dir: str, trials: int, parallel: int, verbose: bool) -> int:
    from trainer.outputs.table import write_csv
    from trainer.tune import results, study as study_mod

    study = study_mod.search(study_dir, cfg, space, trials, parallel, verbose)
    rows = results.ranked(study, space)
    print()
    print(results.table(rows))
    csv_path = os.path.join(study_dir, "trials.csv")
    plot_path = os.path.join(study_dir, "objective.png")
    write_csv(rows, csv_path)
    results.plot(rows, space, plot_path, f"{os.path.basename(study_dir)}: {space.metric}")
    states = [r["state"] for r in rows]
    print(f"\n{states.count('complete')} complete, {states.count('pruned')} pruned, "
          f"{states.count('failed')} failed")
    print(f"table: {csv_path}\nplot:  {plot_path}")
    if rows and rows[0]["state"] == "complete":
        print(f"best:  {os.path.join(study_dir, rows[0]['run'])} "
              f"({space.metric}={rows[0][space.metric]:.4g})")
    if states and all(s == "failed" for s in states):
        first = rows[0]
        cli.print_error(f"every trial failed, {os.path.join(study_dir, first['run'])}, expected "
                        f"at least one to finish (first error: {first['error']})")
        return 2
    return 0


def vertex_search(cfg, space, study_url: str, trials: int, parallel: int) -> int:
    from trainer import storage
    from trainer.cloud import client, preflight
    from trainer.tune import vertex

    preflight.check(cfg, FLAGS.config)
    machines = machine_flags.machines(FLAGS)
    overrides = list(FLAGS.set)
    if space.metric != cfg.train.monitor:
        # Trials report train.monitor to the tuner (cloudml-hypertune), so it must be the metric.
        overrides.append(f"train.monitor={space.metric}")
    job = vertex.tuning_job(os.path.basename(study_url), space, trials, parallel, FLAGS.config,
                            overrides, study_url, machines)
    if FLAGS.dry_run:
        print(vertex_job.to_json(job))
        return 0
    for what, url in (("--config", FLAGS.config), ("--output_dir", study_url)):
        if url and storage.is_local(url):  # no --config: the trials train the embedded demo
            raise UserError(f"{what} is {url}, --vertex, expected a gs:// URL that the trials "
                            "can read and write")
    print(f"submitted: {client.send(job, FLAGS.project, FLAGS.region).name}")
    return 0


def tune_from_flags(args: list[str]) -> int:
    from trainer import config as config_mod, storage
    from trainer.tune import space as space_mod

    if not FLAGS.space:
        raise UserError("no search space given, --space, expected a YAML file with 'params'")
    cfg = config_mod.load(FLAGS.config, FLAGS.set, FLAGS.output_dir)
    space = space_mod.load(FLAGS.space, cfg)
    trials = _target(space, FLAGS.trials)
    study_dir = storage.join(cfg.output.dir, FLAGS.study_name or f"{cfg.name}-tune")
    if FLAGS.vertex:
        return vertex_search(cfg, space, study_dir, trials, FLAGS.parallel)
    if not storage.is_local(study_dir):
        raise UserError(f"study directory {study_dir} is not local, --output_dir, expected a "
                        "local folder for the study database (or --vertex for a search in the "
                        "cloud)")
    try:
        return local_search(cfg, space, study_dir, trials, FLAGS.parallel, FLAGS.verbose)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


main = cli.Command(tune_from_flags, FLAGS)

if __name__ == "__main__":
    main.run()
