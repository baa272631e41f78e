"""`python -m trainer.submit --config FILE ...`: run the training job as a Vertex AI CustomJob.

The job is built by `trainer.cloud.vertex_job`, as the API's own message types, so a wrong
machine or accelerator fails here, before anything is uploaded or sent. Then one of:
- `--dry_run`: print the CustomJob as JSON (the API's camelCase form); nothing is uploaded;
- `--gcloud_yaml FILE`: upload the config, write the job spec for
  `gcloud ai custom-jobs create --config FILE` and print that command;
- otherwise: upload the config and create the job through the aiplatform client library.

A local config is uploaded to `<staging_bucket>/configs/` (named by its content, so re-submitting
it reuses the object); the container reads it from there. Outputs go to `--base_output_dir`,
which Vertex AI hands to the job as AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Optional, Sequence

import yaml

from trainer import cli, storage
from trainer.cloud import preflight, vertex_job
from trainer.cloud.client import send
from trainer.cloud.vertex_job import DEFAULT_ACCELERATOR, DEFAULT_MACHINE, DEFAULT_REGION
from trainer.runtime import secrets
from trainer import config as config_mod
from trainer.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line ends like every other input error: one line, exit 2."""

    def error(self, message: str):
        cli.print_error(f"{message}, command line, expected the options in "
                        "`python -m trainer.submit --help`")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m trainer.submit", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True,
                   help="the job's YAML config: a local file (uploaded), gs:// or /gcs/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed on to the job; may repeat")
    p.add_argument("--project", required=True, help="Google Cloud project id")
    p.add_argument("--region", default=DEFAULT_REGION, help="Vertex AI region")
    p.add_argument("--staging_bucket", required=True,
                   help="gs://BUCKET[/PREFIX] for the uploaded config and, by default, the outputs")
    p.add_argument("--image_uri", default=None,
                   help="training image (default: REGION-docker.pkg.dev/PROJECT/trainer/trainer:"
                        "latest, what cloudbuild.yaml pushes)")
    p.add_argument("--machine_type", default=DEFAULT_MACHINE, help="Compute Engine machine type")
    p.add_argument("--accelerator_type", default=DEFAULT_ACCELERATOR,
                   help="GPU type as the API names it (e.g. NVIDIA_L4), or none for a CPU job")
    p.add_argument("--accelerator_count", type=int, default=1, help="GPUs per replica")
    p.add_argument("--replica_count", type=int, default=1,
                   help="machines training together (MultiWorkerMirroredStrategy when > 1)")
    p.add_argument("--spot", action="store_true",
                   help="Spot VMs; Vertex AI restarts a preempted job, which resumes from its "
                        "checkpoints")
    p.add_argument("--service_account", default=None, help="service account the job runs as")
    p.add_argument("--display_name", default=None, help="job name (default: NAME-TIMESTAMP)")
    p.add_argument("--base_output_dir", default=None,
                   help="gs:// folder for the outputs (default: STAGING_BUCKET/jobs/DISPLAY_NAME)")
    p.add_argument("--api_endpoint", default=None,
                   help="Vertex AI endpoint (default: REGION-aiplatform.googleapis.com); an "
                        "http:// endpoint, such as a local test server, is sent no credentials")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--dry_run", action="store_true",
                     help="print the CustomJob as JSON instead of sending it")
    out.add_argument("--gcloud_yaml", default=None, metavar="FILE",
                     help="write the job spec for `gcloud ai custom-jobs create --config` instead "
                          "of sending it, and print that command")
    return p


# -------------------------------------------------------------------------------------------------
# Building the job (offline).


def staged_config_url(config_path: str, staging_bucket: str) -> str:
    """Where a local config goes in the bucket; remote configs stay where they are."""
    if not storage.is_local(config_path):
        return storage.normalize(config_path)
    digest = hashlib.sha256(storage.read_bytes(config_path)).hexdigest()[:12]
    return storage.join(staging_bucket, "configs", f"{digest}-{os.path.basename(config_path)}")


def machines(args: argparse.Namespace) -> vertex_job.Machines:
    """The flags that say where the job runs, as the shared job builder takes them."""
    return vertex_job.Machines(
        project=args.project, region=args.region, image_uri=args.image_uri,
        machine_type=args.machine_type, accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count, replica_count=args.replica_count,
        spot=args.spot, service_account=args.service_account)


def build_job(args: argparse.Namespace, config_url: str, display_name: str):
    """The CustomJob: the training image reading `config_url`, with the `--set` overrides."""
    from google.cloud import aiplatform_v1 as v1

    if not args.staging_bucket.startswith("gs://"):
        raise UserError(f"staging bucket {args.staging_bucket!r}, --staging_bucket, expected "
                        "gs://BUCKET[/PREFIX]")
    container_args = ["--config", config_url, *[a for s in args.set for a in ("--set", s)]]
    base = args.base_output_dir or storage.join(args.staging_bucket, "jobs", display_name)
    return v1.CustomJob(display_name=display_name,
                        job_spec=vertex_job.job_spec(machines(args), container_args, base))


def gcloud_command(args: argparse.Namespace, display_name: str, yaml_path: str) -> str:
    return (f"gcloud ai custom-jobs create --project={args.project} --region={args.region} "
            f"--display-name={display_name} --config={yaml_path}")


def submit(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.set)  # a bad config fails here, not on the cloud
    preflight.check(cfg, args.config)
    display_name = args.display_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config_url = staged_config_url(args.config, args.staging_bucket)
    job = build_job(args, config_url, display_name)
    if args.dry_run:
        print(vertex_job.to_json(job))
        return 0
    if storage.is_local(args.config):
        storage.put_file(args.config, config_url)
        print(f"config: {config_url}")
    if args.gcloud_yaml:
        spec = json.loads(vertex_job.to_json(job))["jobSpec"]
        with open(args.gcloud_yaml, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
        print(gcloud_command(args, display_name, args.gcloud_yaml))
        return 0
    created = send(job, args.project, args.region, args.api_endpoint)
    job_id = created.name.rsplit("/", 1)[-1]
    print(f"job: {created.name}")
    print(f"outputs: {job.job_spec.base_output_directory.output_uri_prefix}")
    print(f"logs: gcloud ai custom-jobs stream-logs {job_id} --project={args.project} "
          f"--region={args.region}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return submit(args)
    except UserError as exc:
        cli.print_error(exc)
        return exc.exit_code


if __name__ == "__main__":
    secrets.install_excepthook()
    sys.exit(main())
