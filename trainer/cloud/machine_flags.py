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


def machines(values: flags.FlagValues) -> vertex_job.Machines:
    """The parsed machine flags, as the shared job builder takes them."""
    return vertex_job.Machines(
        project=values.project, region=values.region, image_uri=values.image_uri,
        machine_type=values.machine_type, accelerator_type=values.accelerator_type,
        accelerator_count=values.accelerator_count, replica_count=values.replica_count,
        spot=values.spot, service_account=values.service_account)
