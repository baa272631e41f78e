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
# Reduction Server: Google's image for the third worker pool, on the machine type its guide uses.
REDUCTION_SERVER_IMAGE = "us-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
DEFAULT_REDUCTION_SERVER_MACHINE = "n1-highcpu-16"
# What the GPU workers need beside the Reduction Server pool: their all-reduce goes through
# NCCL, whose transport plugin (google-reduction-server, installed in the image) reaches the
# reducers; NCCL_DEBUG=INFO makes each worker's log say which transport NCCL loaded.
REDUCTION_SERVER_WORKER_ENV = {"NCCL_DEBUG": "INFO"}
FLEX_START_LONGEST = 7 * 24 * 3600  # a flex-start (Dynamic Workload Scheduler) job runs <= 7 days
TENSORBOARD = re.compile(r"^projects/([^/]+)/locations/([^/]+)/tensorboards/([^/]+)$")
RESOURCE_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DURATION = re.compile(r"^(\d+[smhd])+$")


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
    # Scheduling and capacity (each refused here in the combinations the API would refuse).
    flex_start: bool = False  # Dynamic Workload Scheduler: wait for the machines, up to max_wait
    max_wait: Optional[str] = None  # a duration: 90m, 2h, 1d
    timeout: Optional[str] = None
    restart_on_worker_restart: bool = False
    persistent_resource: Optional[str] = None  # the id of a persistent resource in the region
    enable_web_access: bool = False
    reduction_server: int = 0  # replicas of the Reduction Server pool
    reduction_server_machine: str = DEFAULT_REDUCTION_SERVER_MACHINE
    tensorboard: Optional[str] = None  # projects/P/locations/L/tensorboards/ID

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
    env = REDUCTION_SERVER_WORKER_ENV if machines.reduction_server else {}
    container = v1.ContainerSpec(image_uri=machines.image(), command=list(command),
                                 args=list(args),
                                 env=[v1.EnvVar(name=k, value=v) for k, v in env.items()])
    pools = [v1.WorkerPoolSpec(machine_spec=spec, replica_count=1, container_spec=container)]
    if machines.replica_count > 1:
        pools.append(v1.WorkerPoolSpec(machine_spec=spec, replica_count=machines.replica_count - 1,
                                       container_spec=container))
    if machines.reduction_server:
        pools.append(reduction_server_pool(machines))
    return pools


def reduction_server_pool(machines: Machines) -> v1.WorkerPoolSpec:
    """The third pool: Google's Reduction Server image on CPU machines, which the GPU workers'
    NCCL all-reduce goes through. It speeds up all-reduce between GPU machines only."""
    from google.cloud import aiplatform_v1 as v1

    flag = f"--reduction_server={machines.reduction_server}"
    if machines.reduction_server < 0:
        raise UserError(f"reduction server replicas {machines.reduction_server}, {flag}, "
                        "expected >= 1 (or 0 for none)")
    if (machines.accelerator_type or "").lower() in ("", "none"):
        raise UserError(f"Reduction Server for CPU workers, {flag}, expected GPU workers "
                        "(--accelerator_type): it reduces NCCL's all-reduce between GPUs")
    if machines.replica_count < 2:
        raise UserError(f"Reduction Server for {machines.replica_count} GPU worker, {flag}, "
                        "expected --replica_count >= 2: one machine's GPUs reduce among "
                        "themselves")
    machine = machines.reduction_server_machine
    if not MACHINE_TYPE.match(machine):
        raise UserError(f"machine type {machine!r}, --reduction_server_machine, expected a "
                        "Compute Engine machine type such as n1-highcpu-16")
    return v1.WorkerPoolSpec(machine_spec=v1.MachineSpec(machine_type=machine),
                             replica_count=machines.reduction_server,
                             container_spec=v1.ContainerSpec(image_uri=REDUCTION_SERVER_IMAGE))


def duration_seconds(text: str, flag: str) -> int:
    """`90m`, `2h`, `1d`, `1h30m` (also `s`) as seconds; anything else is refused."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    compact = str(text).strip().lower()
    seconds = (sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", compact))
               if DURATION.match(compact) else 0)
    if seconds <= 0:
        raise UserError(f"duration {text!r}, {flag}, expected a positive duration such as 90m, "
                        "2h or 1d")
    return seconds


def scheduling(machines: Machines) -> Optional[v1.Scheduling]:
    """Spot or flex-start, the job's timeout and restarts; None when nothing is asked for."""
    from google.cloud import aiplatform_v1 as v1
    from google.protobuf import duration_pb2

    m = machines
    if m.flex_start and m.spot:
        raise UserError("--flex_start with --spot, command line, expected one of them: a "
                        "flex-start job waits for on-demand machines, a Spot job takes spare ones")
    if m.max_wait and not m.flex_start:
        raise UserError(f"--max_wait={m.max_wait} without --flex_start, command line, expected "
                        "--flex_start (only a flex-start job waits for its machines)")
    if m.persistent_resource and (m.flex_start or m.spot):
        which = "--flex_start" if m.flex_start else "--spot"
        raise UserError(f"{which} with --persistent_resource={m.persistent_resource}, command "
                        "line, expected one of them: a job on a persistent resource runs on its "
                        "machines, which are already provisioned")
    timeout = duration_seconds(m.timeout, "--timeout") if m.timeout else None
    if m.flex_start and timeout and timeout > FLEX_START_LONGEST:
        raise UserError(f"--timeout={m.timeout} with --flex_start, command line, expected at "
                        "most 7d (flex-start machines are held for up to 7 days)")
    if not (m.spot or m.flex_start or timeout or m.restart_on_worker_restart):
        return None
    found = v1.Scheduling(
        # A preempted Spot VM restarts the job instead of failing it; it resumes from checkpoints.
        restart_job_on_worker_restart=m.spot or m.restart_on_worker_restart)
    if m.spot:
        found.strategy = v1.Scheduling.Strategy.SPOT
    if m.flex_start:
        found.strategy = v1.Scheduling.Strategy.FLEX_START
        if m.max_wait:
            found.max_wait_duration = duration_pb2.Duration(
                seconds=duration_seconds(m.max_wait, "--max_wait"))
    if timeout:
        found.timeout = duration_pb2.Duration(seconds=timeout)
    return found


def check_tensorboard(machines: Machines) -> None:
    """A Vertex TensorBoard instance: its full name, in the job's region; the API also needs a
    service account for the job to write to it."""
    name = machines.tensorboard
    flag = f"--tensorboard={name}"
    match = TENSORBOARD.match(name or "")
    if not match:
        raise UserError(f"TensorBoard {name!r}, --tensorboard, expected a resource name "
                        "projects/PROJECT/locations/REGION/tensorboards/ID")
    if match.group(2) != machines.region:
        raise UserError(f"TensorBoard in {match.group(2)}, {flag}, expected one in the job's "
                        f"region {machines.region} (Vertex AI streams only within a region)")
    if not machines.service_account:
        raise UserError(f"no --service_account, {flag}, expected the service account the job "
                        "runs as: Vertex AI streams to a TensorBoard only from a job with one "
                        "(with roles/aiplatform.user and write access to the output bucket)")


def job_spec(machines: Machines, args: Sequence[str], output_dir: str,
             command: Sequence[str] = ()) -> v1.CustomJobSpec:
    """A custom job's spec (a training job, or each trial of a tuning job). Vertex AI hands
    `output_dir` to the job as AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR."""
    from google.cloud import aiplatform_v1 as v1

    found = scheduling(machines)  # the combinations refused first, before the machines
    if machines.tensorboard:
        check_tensorboard(machines)
    if machines.persistent_resource and not RESOURCE_ID.match(machines.persistent_resource):
        raise UserError(f"persistent resource {machines.persistent_resource!r}, "
                        "--persistent_resource, expected the id of one in the job's region "
                        "(lowercase letters, digits and -, as `gcloud ai persistent-resources "
                        "list` shows it)")
    spec = v1.CustomJobSpec(worker_pool_specs=worker_pools(machines, args, command),
                            base_output_directory=v1.GcsDestination(output_uri_prefix=output_dir))
    if machines.service_account:
        spec.service_account = machines.service_account
    if found is not None:
        spec.scheduling = found
    if machines.tensorboard:
        spec.tensorboard = machines.tensorboard
    if machines.persistent_resource:
        spec.persistent_resource_id = machines.persistent_resource
    if machines.enable_web_access:
        spec.enable_web_access = True
    return spec


def to_json(job) -> str:
    """A job as the REST API spells it: camelCase keys, enum names, no empty defaults."""
    return type(job).to_json(job, use_integers_for_enums=False,
                             always_print_fields_with_no_presence=False, indent=2)
