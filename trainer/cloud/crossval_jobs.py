"""`trainer.submit --crossval K`: a cross-validation's folds as Vertex AI CustomJobs, one job
per fold, so folds run in parallel, each on the machines the flags ask for (several replicas
each, too) and each restartable alone.

Fold k's job is the training job with `data.fold: [k, K]` and `name: fold-<k>`, writing to
`<base>/<name>-crossval/fold-<k>/`, the layout `trainer.crossval` keeps locally: once the jobs
are done, `python -m trainer.crossval --config FILE --folds K --output_dir <base>` finds every
fold finished, trains nothing, and writes `crossval.json` and `crossval.html` there.
"""

from __future__ import annotations

import json

from trainer import storage
from trainer.cloud import machine_flags, vertex_job
from trainer.errors import UserError


def fold_args(config_url: str, overrides: list[str], name: str, k: int, folds: int,
              base: str) -> list[str]:
    """The container's arguments for fold k (`trainer.task` reads them)."""
    return ["--config", config_url, *[a for s in overrides for a in ("--set", s)],
            "--set", f"data.fold=[{k}, {folds}]", "--set", f"name=fold-{k}",
            "--output_dir", storage.join(base, f"{name}-crossval")]


def build_jobs(args, config_url: str, cfg, display_name: str) -> list:
    """One CustomJob per fold; each fold's config is checked here, not on the cloud."""
    from google.cloud import aiplatform_v1 as v1

    from trainer import crossval

    folds = args.crossval
    for flag in ("experiment", "experiment_run", "gcloud_yaml"):
        if args[flag].value:
            raise UserError(f"--{flag} with --crossval, command line, expected one of them "
                            "(a cross-validation is several jobs)")
    if not args.staging_bucket.startswith("gs://"):
        raise UserError(f"staging bucket {args.staging_bucket!r}, --staging_bucket, expected "
                        "gs://BUCKET[/PREFIX]")
    crossval.fold_config(cfg, 0, folds)  # a config that cannot be cut into folds fails here
    base = crossval_base(args, display_name)
    if not base.startswith("gs://"):
        raise UserError(f"local output folder {args.base_output_dir!r}, --base_output_dir, "
                        "expected gs://BUCKET/PATH (or /gcs/BUCKET/PATH), where the jobs write")
    machines = machine_flags.machines(args)
    jobs = []
    for k in range(folds):
        spec = vertex_job.job_spec(machines, fold_args(config_url, list(args.set), cfg.name, k,
                                                       folds, base),
                                   storage.join(base, "jobs", f"fold-{k}"))
        jobs.append(v1.CustomJob(display_name=f"{display_name}-fold{k}", job_spec=spec))
    return jobs


def crossval_base(args, display_name: str) -> str:
    return storage.normalize(args.base_output_dir) if args.base_output_dir else storage.join(
        args.staging_bucket, "jobs", display_name)


def submit(args, cfg, local_config: str, config_url: str, display_name: str) -> int:
    """Build the fold jobs; print them (`--dry_run`, one JSON object per line) or upload the
    config and create them; says how to gather the folds' figures afterwards."""
    from trainer.cloud.client import send

    jobs = build_jobs(args, config_url, cfg, display_name)
    if args.dry_run:
        for job in jobs:
            print(json.dumps(json.loads(vertex_job.to_json(job))))
        return 0
    if storage.is_local(local_config):
        storage.put_file(local_config, config_url)
        print(f"config: {config_url}")
    for job in jobs:
        created = send(job, args.project, args.region, args.api_endpoint)
        print(f"job: {created.name} ({job.display_name})")
    base = crossval_base(args, display_name)
    print(f"outputs: {storage.join(base, cfg.name + '-crossval')}")
    print(f"when the jobs are done: python -m trainer.crossval --config {config_url} --folds "
          f"{args.crossval} {' '.join('--set ' + s for s in args.set)}"
          f"{' ' if args.set else ''}--output_dir {base}")
    return 0
