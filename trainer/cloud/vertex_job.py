"""The worker pools of a Vertex AI job, built as the API's own message types.

Building with `google.cloud.aiplatform_v1` works offline and checks field names and enum values
as the API would, so a wrong machine or accelerator fails on the laptop, before anything is
uploaded or sent. What the API would accept but the cloud would refuse later (a GPU on a machine
family it cannot be attached to) is checked here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from trainer.errors import UserError

if TYPE_CHECKING:  # the client library takes seconds to import; the commands' flags need only
    from google.cloud import aiplatform_v1 as v1  # the defaults, so it is imported when used

DEFAULT_REGION = "us-central1"
DEFAULT_MACHINE = "n1-standard-8"
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"
DEFAULT_ACCELERATOR_COUNT = 1
DEFAULT_IMAGE = "{region}-docker.pkg.dev/{project}/trainer/trainer:latest"  # what cloudbuild.yaml pushes
# The machine families each GPU can be attached to on Vertex AI (a2, a3, g2 and a4 machines come
# with their GPUs built in). GPUs not listed here are not checked.
GPU_MACHINE_FAMILIES = {
    "NVIDIA_TESLA_K80": "n1", "NVIDIA_TESLA_P4": "n1", "NVIDIA_TESLA_P100": "n1",
    "NVIDIA_TESLA_V100": "n1", "NVIDIA_TESLA_T4": "n1", "NVIDIA_TESLA_A100": "a2",
    "NVIDIA_A100_80GB": "a2", "NVIDIA_L4": "g2", "NVIDIA_H100_80GB": "a3",
    "NVIDIA_H100_MEGA_80GB": "a3", "NVIDIA_H200_141GB": "a3", "NVIDIA_B200": "a4",
}
MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Machines:
    """Where a job runs, kept apart from the experiment's config. The fields mirror the flags of
    `trainer.submit` and `trainer.tune --vertex`, which name them in their errors."""

    project: Optional[str]
    region: str = DEFAULT_REGION
    image_uri: Optional[str] = None  # default: DEFAULT_IMAGE in the project
    machine_type: str = DEFAULT_MACHINE
    accelerator_type: Optional[str] = DEFAULT_ACCELERATOR  # None or "none": a CPU job
    accelerator_count: int = DEFAULT_ACCELERATOR_COUNT
    replica_count: int = 1  # machines training together (MultiWorkerMirroredStrategy when > 1)
    spot: bool = False
    service_account: Optional[str] = None

    def image(self) -> str:
        """The training image: the one given, else the project's own (a project is needed)."""
        if self.image_uri:
            return self.image_uri
        if not self.project:
            raise UserError("no project given, --project, expected a Google Cloud project id "
                            "(the default --image_uri is "
                            f"{DEFAULT_IMAGE.format(region=self.region, project='PROJECT')}), "
                            "or an --image_uri")
        return DEFAULT_IMAGE.format(region=self.region, project=self.project)


def machine_spec(machine_type: str, accelerator_type: Optional[str],
                 accelerator_count: int) -> v1.MachineSpec:
    """One worker's MachineSpec; a machine or GPU the API would refuse fails here."""
    from google.cloud import aiplatform_v1 as v1

    if not MACHINE_TYPE.match(machine_type):
        raise UserError(f"machine type {machine_type!r}, --machine_type, expected a Compute Engine "
                        "machine type such as n1-standard-8 or g2-standard-8")
    if (accelerator_type or "").lower() in ("", "none"):
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


def worker_pools(machines: Machines, args: Sequence[str],
                 command: Sequence[str] = ()) -> list[v1.WorkerPoolSpec]:
    """Pool 0 is the chief (one replica), pool 1 the other workers; each runs the image with
    `args` (after `command`, or after the image's own entry point when there is none)."""
    from google.cloud import aiplatform_v1 as v1

    if machines.replica_count < 1:
        raise UserError(f"replica count {machines.replica_count}, --replica_count, expected >= 1")
    spec = machine_spec(machines.machine_type, machines.accelerator_type,
                        machines.accelerator_count)
    container = v1.ContainerSpec(image_uri=machines.image(), command=list(command),
                                 args=list(args))
    pools = [v1.WorkerPoolSpec(machine_spec=spec, replica_count=1, container_spec=container)]
    if machines.replica_count > 1:
        pools.append(v1.WorkerPoolSpec(machine_spec=spec, replica_count=machines.replica_count - 1,
                                       container_spec=container))
    return pools


def job_spec(machines: Machines, args: Sequence[str], output_dir: str,
             command: Sequence[str] = ()) -> v1.CustomJobSpec:
    """A custom job's spec (a training job, or each trial of a tuning job). Vertex AI hands
    `output_dir` to the job as AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR."""
    from google.cloud import aiplatform_v1 as v1

    spec = v1.CustomJobSpec(worker_pool_specs=worker_pools(machines, args, command),
                            base_output_directory=v1.GcsDestination(output_uri_prefix=output_dir))
    if machines.service_account:
        spec.service_account = machines.service_account
    if machines.spot:
        # A preempted Spot VM restarts the job instead of failing it; it resumes from checkpoints.
        spec.scheduling = v1.Scheduling(strategy=v1.Scheduling.Strategy.SPOT,
                                        restart_job_on_worker_restart=True)
    return spec


def to_json(job) -> str:
    """A job as the REST API spells it: camelCase keys, enum names, no empty defaults."""
    return type(job).to_json(job, use_integers_for_enums=False,
                             always_print_fields_with_no_presence=False, indent=2)
