"""`python -m trainer.submit --config FILE ...`: run the training job as a Vertex AI CustomJob.

The job is built as the API's own message types (`google.cloud.aiplatform_v1`), so a wrong
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
import re
import sys
import time
from typing import Optional, Sequence

import yaml

from trainer import cli, storage
from trainer.runtime import secrets
from trainer import config as config_mod
from trainer.errors import UserError

DEFAULT_REGION = "us-central1"
DEFAULT_MACHINE = "n1-standard-8"
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"
# The machine families each GPU can be attached to on Vertex AI (a2, a3, g2 and a4 machines come
# with their GPUs built in). GPUs not listed here are not checked.
GPU_MACHINE_FAMILIES = {
    "NVIDIA_TESLA_K80": "n1", "NVIDIA_TESLA_P4": "n1", "NVIDIA_TESLA_P100": "n1",
    "NVIDIA_TESLA_V100": "n1", "NVIDIA_TESLA_T4": "n1", "NVIDIA_TESLA_A100": "a2",
    "NVIDIA_A100_80GB": "a2", "NVIDIA_L4": "g2", "NVIDIA_H100_80GB": "a3",
    "NVIDIA_H100_MEGA_80GB": "a3", "NVIDIA_H200_141GB": "a3", "NVIDIA_B200": "a4",
}
MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9]+(-[a-z0-9]+)*$")


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


def refuse_credentials(cfg: config_mod.Config, config_path: Optional[str]) -> None:
    """Vertex AI keeps a job's spec (with its `--set` overrides) and its staged config, and shows
    them in its console: a credential in either would outlive the job. A job reaches its data as
    its service account (--service_account), never by a token it is handed."""
    where = [*secrets.find(cfg.to_dict()), *secrets.find(config_path or "", "--config")]
    if where:
        raise UserError(f"a credential in the job's config ({', '.join(where)}), "
                        f"{config_path or '--set'}, expected none: the job spec and config are "
                        "stored by Vertex AI; give the job a --service_account that can read "
                        "the data instead")


def machine_spec(machine_type: str, accelerator_type: str, accelerator_count: int):
    """The worker's MachineSpec; a machine or GPU the API would refuse fails here."""
    from google.cloud import aiplatform_v1 as v1

    if not MACHINE_TYPE.match(machine_type):
        raise UserError(f"machine type {machine_type!r}, --machine_type, expected a Compute Engine "
                        "machine type such as n1-standard-8 or g2-standard-8")
    if accelerator_type.lower() in ("", "none"):
        return v1.MachineSpec(machine_type=machine_type)
    names = [a.name for a in v1.AcceleratorType if a.name != "ACCELERATOR_TYPE_UNSPECIFIED"]
    if accelerator_type not in names:
        raise UserError(f"unknown accelerator {accelerator_type!r}, --accelerator_type, expected "
                        f"none or one of {', '.join(names)}")
    if accelerator_count < 1:
        raise UserError(f"accelerator count {accelerator_count}, --accelerator_count, expected >= 1")
    family = GPU_MACHINE_FAMILIES.get(accelerator_type)
    if family and machine_type.split("-")[0] != family:
        raise UserError(f"{accelerator_type} cannot be attached to {machine_type}, --machine_type, "
                        f"expected a machine type of the {family} family")
    built_in = re.search(r"-(\d+)g$", machine_type)
    if built_in and int(built_in.group(1)) != accelerator_count:
        raise UserError(f"{machine_type} has {built_in.group(1)} GPUs, --accelerator_count="
                        f"{accelerator_count}, expected {built_in.group(1)}")
    return v1.MachineSpec(machine_type=machine_type, accelerator_type=accelerator_type,
                          accelerator_count=accelerator_count)


def build_job(args: argparse.Namespace, config_url: str, display_name: str):
    """The CustomJob: pool 0 is the chief (one replica), pool 1 the other workers."""
    from google.cloud import aiplatform_v1 as v1

    if not args.staging_bucket.startswith("gs://"):
        raise UserError(f"staging bucket {args.staging_bucket!r}, --staging_bucket, expected "
                        "gs://BUCKET[/PREFIX]")
    if args.replica_count < 1:
        raise UserError(f"replica count {args.replica_count}, --replica_count, expected >= 1")
    image = args.image_uri or f"{args.region}-docker.pkg.dev/{args.project}/trainer/trainer:latest"
    container = v1.ContainerSpec(
        image_uri=image, args=["--config", config_url, *[a for s in args.set for a in ("--set", s)]])
    spec = machine_spec(args.machine_type, args.accelerator_type, args.accelerator_count)
    pools = [v1.WorkerPoolSpec(machine_spec=spec, replica_count=1, container_spec=container)]
    if args.replica_count > 1:
        pools.append(v1.WorkerPoolSpec(machine_spec=spec, replica_count=args.replica_count - 1,
                                       container_spec=container))
    base = args.base_output_dir or storage.join(args.staging_bucket, "jobs", display_name)
    job_spec = v1.CustomJobSpec(worker_pool_specs=pools,
                                base_output_directory=v1.GcsDestination(output_uri_prefix=base))
    if args.service_account:
        job_spec.service_account = args.service_account
    if args.spot:
        # A preempted Spot VM restarts the job instead of failing it; it resumes from checkpoints.
        job_spec.scheduling = v1.Scheduling(strategy=v1.Scheduling.Strategy.SPOT,
                                            restart_job_on_worker_restart=True)
    return v1.CustomJob(display_name=display_name, job_spec=job_spec)


def to_json(job) -> str:
    """The job as the REST API spells it: camelCase keys, enum names, no empty defaults."""
    from google.cloud import aiplatform_v1 as v1

    return v1.CustomJob.to_json(job, use_integers_for_enums=False,
                                including_default_value_fields=False, indent=2)


# -------------------------------------------------------------------------------------------------
# Sending it.


def send(job, project: str, region: str, api_endpoint: Optional[str] = None):
    """Create the job (a CustomJob, or a HyperparameterTuningJob from `trainer.tune --vertex`)
    through the client library's REST transport; returns the created job."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1 as v1

    endpoint = api_endpoint or f"{region}-aiplatform.googleapis.com"
    credentials = AnonymousCredentials() if endpoint.startswith("http://") else None
    parent = f"projects/{project}/locations/{region}"
    try:
        client = v1.JobServiceClient(credentials=credentials, transport="rest",
                                     client_options={"api_endpoint": endpoint})
        if isinstance(job, v1.HyperparameterTuningJob):
            return client.create_hyperparameter_tuning_job(parent=parent,
                                                           hyperparameter_tuning_job=job)
        return client.create_custom_job(parent=parent, custom_job=job)
    except auth_exceptions.DefaultCredentialsError:
        raise UserError(f"no Google Cloud credentials, {parent}, expected `gcloud auth "
                        "application-default login` or a service account") from None
    except exceptions.GoogleAPICallError as exc:
        raise UserError(refusal(exc, parent)) from None


_EXPECTED = {
    "PERMISSION_DENIED": "an account that may create Vertex AI jobs in the project (e.g. role "
                         "roles/aiplatform.user)",
    "RESOURCE_EXHAUSTED": "quota for the machine and accelerator in the region (or another region)",
    "INVALID_ARGUMENT": "a job the API accepts (see the field in the message)",
}


def refusal(exc, parent: str) -> str:
    """One line from the API's refusal: its HTTP code, status and own message (the REST
    transport puts the request's method and URL in front of it: left out)."""
    status = getattr(exc.grpc_status_code, "name", None)
    try:  # REST: the status is in the error object the API sent
        status = exc.response.json()["error"]["status"]
    except (AttributeError, ValueError, KeyError, TypeError):
        pass
    status = status or "ERROR"
    message = re.sub(r"^[A-Z]+ \S+: ", "", str(exc.message or ""))
    message = " ".join(message.split()) or "no message"
    expected = _EXPECTED.get(status, "a job the project may run (see the message)")
    return f"Vertex AI refused the job ({exc.code} {status}: {message}), {parent}, expected {expected}"


def gcloud_command(args: argparse.Namespace, display_name: str, yaml_path: str) -> str:
    return (f"gcloud ai custom-jobs create --project={args.project} --region={args.region} "
            f"--display-name={display_name} --config={yaml_path}")


def submit(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.set)  # a bad config fails here, not on the cloud
    refuse_credentials(cfg, args.config)
    for key in ("train", "val", "test"):
        paths = getattr(cfg.data, key) or []
        for path in [paths] if isinstance(paths, str) else paths:
            if storage.is_local(path):
                raise UserError(f"local data path, data.{key}={path}, expected gs:// or /gcs/ "
                                "paths that the job on Vertex AI can read")
    display_name = args.display_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config_url = staged_config_url(args.config, args.staging_bucket)
    job = build_job(args, config_url, display_name)
    if args.dry_run:
        print(to_json(job))
        return 0
    if storage.is_local(args.config):
        storage.put_file(args.config, config_url)
        print(f"config: {config_url}")
    if args.gcloud_yaml:
        spec = json.loads(to_json(job))["jobSpec"]
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
