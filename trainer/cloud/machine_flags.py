"""The flags that say where a Vertex AI job runs, defined once for every command that sends one.

`trainer.submit` and `trainer.tune --vertex` take the same machine flags with the same defaults
(those of `vertex_job`), and turn them into the same `Machines`.
"""

from __future__ import annotations

from absl import flags

from trainer.cloud import vertex_job


def define(values: flags.FlagValues, note: str = "") -> None:
    """Define the machine flags in a command's own flag set; `note` prefixes each help text."""
    def string(name: str, default, help_text: str) -> None:
        flags.DEFINE_string(name, default, note + help_text, flag_values=values)

    string("project", None, "Google Cloud project id.")
    string("region", vertex_job.DEFAULT_REGION, "Vertex AI region.")
    string("image_uri", None, "Training image (default: "
           f"{vertex_job.DEFAULT_IMAGE.format(region='REGION', project='PROJECT')}, what "
           "cloudbuild.yaml pushes).")
    string("machine_type", vertex_job.DEFAULT_MACHINE, "Compute Engine machine type.")
    string("accelerator_type", vertex_job.DEFAULT_ACCELERATOR,
           "GPU type as the API names it (e.g. NVIDIA_L4), or none for a CPU job.")
    flags.DEFINE_integer("accelerator_count", vertex_job.DEFAULT_ACCELERATOR_COUNT,
                         note + "GPUs per replica.", flag_values=values)
    flags.DEFINE_integer("replica_count", 1, note + "Machines training together "
                         "(MultiWorkerMirroredStrategy when > 1), or sharing the inputs of a "
                         "batch curation job.", flag_values=values)
    flags.DEFINE_bool("spot", False, note + "Spot VMs; Vertex AI restarts a preempted job, which "
                      "resumes from its checkpoints (a curation job: skips the inputs done).",
                      flag_values=values)
    string("service_account", None, "Service account the job runs as.")
    flags.DEFINE_bool("flex_start", False, note + "Flex-start (Dynamic Workload Scheduler): the "
                      "job waits for on-demand machines, up to --max_wait, and runs up to 7 days; "
                      "often the way to get H100s. Not with --spot.", flag_values=values)
    string("max_wait", None, "With --flex_start: how long to wait for the machines (90m, 2h, "
           "1d; default: Vertex AI's).")
    string("timeout", None, "The longest the job may run (90m, 2h, 7d; default: Vertex AI's).")
    flags.DEFINE_bool("restart_on_worker_restart", False, note + "Restart the whole job when a "
                      "worker restarts (Spot jobs always do); it resumes from its checkpoints.",
                      flag_values=values)
    string("persistent_resource", None, "Run on this persistent resource (its id in the "
           "region): no wait for machines. Its resource pools must hold the job's machines.")
    flags.DEFINE_bool("enable_web_access", False, note + "An interactive shell into the running "
                      "job's containers (from the console, or the job's webAccessUris).",
                      flag_values=values)
    flags.DEFINE_integer("reduction_server", 0, note + "Replicas of a Reduction Server pool "
                         "(Google's image) that the GPU workers' NCCL all-reduce goes through; "
                         "for >= 2 GPU workers.", lower_bound=0, flag_values=values)
    string("reduction_server_machine", vertex_job.DEFAULT_REDUCTION_SERVER_MACHINE,
           "With --reduction_server: the reducers' machine type.")
    string("tensorboard", None, "A Vertex TensorBoard the job streams its TensorBoard logs to: "
           "projects/P/locations/REGION/tensorboards/ID, in the job's region; needs "
           "--service_account.")


def machines(values: flags.FlagValues) -> vertex_job.Machines:
    """The parsed machine flags, as the shared job builder takes them."""
    return vertex_job.Machines(
        project=values.project, region=values.region, image_uri=values.image_uri,
        machine_type=values.machine_type, accelerator_type=values.accelerator_type,
        accelerator_count=values.accelerator_count, replica_count=values.replica_count,
        spot=values.spot, service_account=values.service_account,
        flex_start=values.flex_start, max_wait=values.max_wait, timeout=values.timeout,
        restart_on_worker_restart=values.restart_on_worker_restart,
        persistent_resource=values.persistent_resource,
        enable_web_access=values.enable_web_access, reduction_server=values.reduction_server,
        reduction_server_machine=values.reduction_server_machine, tensorboard=values.tensorboard)
