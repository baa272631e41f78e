"""`python -m trainer.submit --config FILE ...`: run the training job as a Vertex AI CustomJob.
`python -m trainer.submit --config FILE --crossval K ...`: a cross-validation, one job per fold.
`python -m trainer.submit --upload_model RUN ...`: register a run's SavedModel in the Model Registry.
`python -m trainer.submit --predict --model MODEL --inputs 'gs://b/videos/*.mp4' --out gs://b/curated/`:
run `trainer.predict --out` (batch curation) as a CustomJob in the same training image, its
replicas sharing the inputs out.

The job is built as the API's own message types (`google.cloud.aiplatform_v1`), so a wrong
machine or accelerator fails here, before anything is uploaded or sent. Then one of:
- `--dry_run`: print the CustomJob as JSON (the API's camelCase form); nothing is uploaded;
- `--gcloud_yaml FILE`: upload the config, write the job spec for
  `gcloud ai custom-jobs create --config FILE` and print that command;
- otherwise: upload the config and create the job through the aiplatform client library.

A local config is uploaded to `<staging_bucket>/configs/` (named by its content, so re-submitting
it reuses the object); the container reads it from there. Outputs go to `--base_output_dir`,
which Vertex AI hands to the job as AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR.

`--upload_model` takes a run folder (local or gs://) with its `saved_model/` and registers it,
served by Vertex AI's pre-built TensorFlow prediction image of the version that trained it
(`--serving_gpu` for the GPU one, `--serving_image` for another); labels carry the run's name
and test metrics. A local run's SavedModel is copied to `--staging_bucket` first. `--dry_run`
prints the Model as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import yaml
from absl import flags

from trainer import cli, storage
from trainer.cloud import experiments, machine_flags, preflight, registry, vertex_job
from trainer.cloud.client import _call, check_persistent_resource, send, upload_model
from trainer import config as config_mod
from trainer.errors import UserError


FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The job's YAML config file (a local one is uploaded).",
                        " Passed on to the job.")
machine_flags.define(FLAGS)
flags.DEFINE_string("staging_bucket", None, "gs://BUCKET[/PREFIX] for the uploaded config and, by "
                    "default, the outputs.", flag_values=FLAGS)
flags.DEFINE_string("display_name", None, "Job name (default: NAME-TIMESTAMP); with "
                    "--upload_model, the model's (default: the run's name).", flag_values=FLAGS)
flags.DEFINE_string("base_output_dir", None, "gs:// folder for the outputs (default: "
                    "STAGING_BUCKET/jobs/DISPLAY_NAME).", flag_values=FLAGS)
flags.DEFINE_string("api_endpoint", None, "Vertex AI endpoint (default: REGION-aiplatform."
                    "googleapis.com); an http:// endpoint, such as a local test server, is sent no "
                    "credentials.", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the CustomJob (or the Model) as JSON instead of "
                  "sending it.", flag_values=FLAGS)
flags.DEFINE_string("gcloud_yaml", None, "Write the job spec for `gcloud ai custom-jobs create "
                    "--config` to this file instead of sending it, and print that command.",
                    flag_values=FLAGS)
flags.DEFINE_bool("predict", False, "Batch curation instead of training: run trainer.predict "
                  "--out on --inputs with --model; each replica takes its share of the inputs.",
                  flag_values=FLAGS)
flags.DEFINE_string("model", None, "With --predict: model.h5 or its run folder (gs:// or /gcs/; "
                    "a local one is uploaded to --staging_bucket).", flag_values=FLAGS)
flags.DEFINE_multi_string("inputs", [], "With --predict: videos, images, shards, folders or globs "
                          "in a bucket (gs:// or /gcs/); may repeat.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "With --predict: the gs:// folder for each input's results.",
                    flag_values=FLAGS)
flags.DEFINE_string("experiment", None, "A Vertex AI Experiment (its name) the job's run is "
                    "logged to: the resolved config as parameters, the final val and test "
                    "metrics, and, with --tensorboard, each epoch's metrics as time series. "
                    "Created when missing; needs --service_account.", flag_values=FLAGS)
flags.DEFINE_string("experiment_run", None, "With --experiment: the run's name (default: the "
                    "job's display name, lowercased).", flag_values=FLAGS)
flags.register_multi_flags_validator(
    ["dry_run", "gcloud_yaml"], lambda given: not (given["dry_run"] and given["gcloud_yaml"]),
    "--dry_run and --gcloud_yaml exclude each other", flag_values=FLAGS)
flags.DEFINE_integer("crossval", None, "Cross-validation: one job per fold of K folds (see "
                     "trainer.crossval), each with the machines asked for.", lower_bound=2,
                     upper_bound=1000, flag_values=FLAGS)
flags.DEFINE_string("upload_model", None, "Register this run's saved_model/ in the Vertex AI "
                    "Model Registry instead of training: a run folder, local or gs://.",
                    flag_values=FLAGS)
flags.DEFINE_bool("serving_gpu", False, "With --upload_model: serve with the GPU build of the "
                  "pre-built TensorFlow prediction image (default: the CPU one).",
                  flag_values=FLAGS)
flags.DEFINE_string("serving_image", None, "With --upload_model: the serving image to use "
                    "instead of the pre-built one (e.g. for a TensorFlow version that has none).",
                    flag_values=FLAGS)
flags.register_multi_flags_validator(
    ["upload_model", "config", "gcloud_yaml"],
    lambda given: not (given["upload_model"] and (given["config"] or given["gcloud_yaml"])),
    "--upload_model takes no --config or --gcloud_yaml", flag_values=FLAGS)


# -------------------------------------------------------------------------------------------------
# Building the job (offline).


def staged_config_url(config_path: str, staging_bucket: str, folder: str = "configs") -> str:
    """Where a local config (or model) goes in the bucket, named by its content; remote ones stay
    where they are."""
    if not storage.is_local(config_path):
        return storage.normalize(config_path)
    digest = hashlib.sha256()
    with storage.open_read(config_path) as f:  # a model may be large: hashed as it is read
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest = digest.hexdigest()[:12]
    return storage.join(staging_bucket, folder, f"{digest}-{os.path.basename(config_path)}")


EXPERIMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


@dataclass(frozen=True)
class Experiment:
    """Where `--experiment` logs the job's run (built offline, created when the job is sent)."""

    project: str
    region: str
    name: str
    run: str
    tensorboard: Optional[str]  # the experiment's backing TensorBoard (--tensorboard)

    @property
    def resource(self) -> str:
        return (f"projects/{self.project}/locations/{self.region}/metadataStores/default/"
                f"contexts/{self.name}")

    @property
    def run_resource(self) -> str:
        return f"{self.resource}-{self.run}"

    def overrides(self) -> list[str]:
        """What the chief is told (config keys), so that it logs to this run."""
        return [f"output.experiment={self.resource}", f"output.experiment_run={self.run}"]

    def url(self) -> str:
        return experiments.console_url(self.project, self.region, self.name, self.run)


def experiment(args: flags.FlagValues, display_name: str) -> Optional[Experiment]:
    """`--experiment [--experiment_run]`, checked as the API would: names it takes, a project,
    and a service account for the job to log as."""
    if args.experiment_run and not args.experiment:
        raise UserError(f"--experiment_run={args.experiment_run} without --experiment, command "
                        "line, expected --experiment NAME too")
    if not args.experiment:
        return None
    name = args.experiment
    if not EXPERIMENT_NAME.match(name):
        raise UserError(f"experiment name {name!r}, --experiment, expected lowercase letters, "
                        "digits and -, starting with a letter or digit (at most 128)")
    run = args.experiment_run or experiments.run_name(display_name)
    if not EXPERIMENT_NAME.match(f"{name}-{run}"):
        raise UserError(f"experiment run {run!r}, --experiment_run, expected lowercase letters, "
                        f"digits and -, at most {127 - len(name)} of them after the experiment's "
                        "name")
    if not args.project:
        raise UserError(f"no project given, --experiment={name}, expected --project, the "
                        "project the experiment is kept in")
    if not args.service_account:
        raise UserError(f"no --service_account, --experiment={name}, expected the service "
                        "account the job runs as: a job logs to an experiment only as one (with "
                        "roles/aiplatform.user)")
    return Experiment(args.project, args.region, name, run, args.tensorboard)


def build_job(args: flags.FlagValues, config_url: str, display_name: str,
              logged: Optional[Experiment] = None):
    """The CustomJob: the training image reading `config_url`, with the `--set` overrides (and
    those that name the experiment run the chief logs to)."""
    from google.cloud import aiplatform_v1 as v1

    if not args.staging_bucket.startswith("gs://"):
        raise UserError(f"staging bucket {args.staging_bucket!r}, --staging_bucket, expected "
                        "gs://BUCKET[/PREFIX]")
    overrides = [*args.set, *(logged.overrides() if logged else [])]
    container_args = ["--config", config_url, *[a for s in overrides for a in ("--set", s)]]
    _check_base_output_dir(args)
    base = args.base_output_dir or storage.join(args.staging_bucket, "jobs", display_name)
    machines = machine_flags.machines(args)
    if logged and logged.tensorboard:
        # The API takes a job's TensorBoard or its experiment, not both: the TensorBoard
        # becomes the experiment's own (its backing TensorBoard), which the job's logs and the
        # run's time series stream to.
        vertex_job.check_tensorboard(machines)
        machines = dataclasses.replace(machines, tensorboard=None)
    spec = vertex_job.job_spec(machines, container_args, base)
    if logged:
        spec.experiment, spec.experiment_run = logged.resource, logged.run_resource
    return v1.CustomJob(display_name=display_name, job_spec=spec)


def _check_base_output_dir(args: flags.FlagValues) -> None:
    """The job writes its outputs there, on Vertex AI: a bucket, never a path on this machine."""
    if args.base_output_dir and not storage.normalize(args.base_output_dir).startswith("gs://"):
        raise UserError(f"local output folder {args.base_output_dir!r}, --base_output_dir, "
                        "expected gs://BUCKET/PATH (or /gcs/BUCKET/PATH), where the job on "
                        "Vertex AI writes")


# Run in the training image in place of its entry point (`python -m trainer.task`).
PREDICT_COMMAND = ["python", "-m", "trainer.predict"]


def build_predict_job(args: flags.FlagValues, model_url: str, display_name: str):
    """The CustomJob that runs `trainer.predict --out` on the inputs, on every replica."""
    from google.cloud import aiplatform_v1 as v1

    container_args = ["--model", model_url, "--out", storage.normalize(args.out), *args.inputs]
    _check_base_output_dir(args)
    base = args.base_output_dir or storage.normalize(args.out)
    spec = vertex_job.job_spec(machine_flags.machines(args), container_args, base,
                               command=PREDICT_COMMAND)
    return v1.CustomJob(display_name=display_name, job_spec=spec)


def gcloud_command(args: flags.FlagValues, display_name: str, yaml_path: str) -> str:
    return (f"gcloud ai custom-jobs create --project={args.project} --region={args.region} "
            f"--display-name={display_name} --config={yaml_path}")


def submit(args: flags.FlagValues) -> int:
    logged = None
    if args.predict:
        for flag in ("tensorboard", "experiment", "experiment_run", "reduction_server",
                     "crossval"):
            if args[flag].value:
                raise UserError(f"--{flag} with --predict, command line, expected it only for "
                                "a training job (a curation job trains nothing)")
        preflight.check_predict(args.model, args.inputs, args.out, args.staging_bucket)
        from trainer.predict import model_file

        model = model_file(args.model) if storage.is_local(args.model) else args.model
        if storage.is_local(model):  # checked here, not on the cloud after an upload
            from trainer.outputs import modelfile

            modelfile.check_inside(model)
        display_name = args.display_name or f"curate-{time.strftime('%Y%m%d-%H%M%S')}"
        local, staged = model, staged_config_url(model, args.staging_bucket or "", "models")
        job = build_predict_job(args, staged, display_name)
    else:
        if args.gcloud_yaml:  # before anything is staged
            storage.check_output(args.gcloud_yaml, f"--gcloud_yaml={args.gcloud_yaml}")
        cfg = config_mod.load(args.config, args.set)  # a bad config fails here, not on the cloud
        preflight.check(cfg, args.config)
        display_name = args.display_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.crossval:
            from trainer.cloud import crossval_jobs

            return crossval_jobs.submit(args, cfg, args.config, staged_config_url(
                args.config, args.staging_bucket), display_name)
        logged = experiment(args, display_name)
        local, staged = args.config, staged_config_url(args.config, args.staging_bucket)
        job = build_job(args, staged, display_name, logged)
    if args.dry_run:
        print(vertex_job.to_json(job))
        return 0
    if storage.is_local(local):
        storage.put_file(local, staged)
        print(f"{'model' if args.predict else 'config'}: {staged}")
    if logged:  # the job's spec names the experiment run: it must exist before the job
        if job.job_spec.persistent_resource_id and not args.gcloud_yaml:
            # Checked before the run is made, so a refused resource leaves no empty run behind.
            check_persistent_resource(job.job_spec, args.project, args.region, args.api_endpoint)
        create_experiment_run(logged, args.api_endpoint)
        print(f"experiment run: {logged.url()}")
    if args.gcloud_yaml:
        spec = json.loads(vertex_job.to_json(job))["jobSpec"]
        with tempfile.TemporaryDirectory() as tmp:  # published whole, as every output is
            local_yaml = os.path.join(tmp, "job.yaml")
            with open(local_yaml, "w") as f:
                yaml.safe_dump(spec, f, sort_keys=False)
            storage.put_file(local_yaml, args.gcloud_yaml)
        print(gcloud_command(args, display_name, args.gcloud_yaml))
        return 0
    created = send(job, args.project, args.region, args.api_endpoint)
    job_id = created.name.rsplit("/", 1)[-1]
    print(f"job: {created.name}")
    outputs = args.out if args.predict else job.job_spec.base_output_directory.output_uri_prefix
    print(f"outputs: {outputs}")
    print(f"logs: gcloud ai custom-jobs stream-logs {job_id} --project={args.project} "
          f"--region={args.region}")
    return 0


def create_experiment_run(logged: Experiment, api_endpoint: Optional[str] = None) -> None:
    """The experiment (with its TensorBoard) and the run, through the aiplatform SDK; an
    existing one is reused (a re-submitted run logs on)."""
    from google.api_core import exceptions

    def create(parent: str):
        from google.cloud import aiplatform

        aiplatform.init(project=logged.project, location=logged.region,
                        experiment=logged.name,
                        experiment_tensorboard=logged.tensorboard or False,  # none created
                        **experiments.sdk_options(api_endpoint))
        try:
            aiplatform.ExperimentRun(logged.run, experiment=logged.name)
        except exceptions.NotFound:
            aiplatform.ExperimentRun.create(logged.run, experiment=logged.name)

    try:
        _call(create, logged.project, logged.region, "experiment run")
    except exceptions.RetryError as exc:  # the SDK's own retries ran out: no answer
        raise UserError(f"no answer from Vertex AI ({str(exc)[:200]}), --experiment="
                        f"{logged.name}, expected the API reachable from here") from None


def register(args: flags.FlagValues) -> int:
    """Register a run's SavedModel (or, with --dry_run, print the Model that would be sent)."""
    flag = f"--upload_model={args.upload_model}"
    run = registry.read_run(args.upload_model)
    artifacts = registry.staged_model_url(run, args.staging_bucket, flag)
    image = args.serving_image or registry.serving_image(run.tensorflow, args.region,
                                                         args.serving_gpu, flag)
    model = registry.build_model(run, artifacts, image, args.display_name)
    if args.dry_run:
        print(vertex_job.to_json(model))
        return 0
    if artifacts != run.saved_model:
        registry.copy_saved_model(run, artifacts)
        print(f"saved_model: {artifacts}")
    name = upload_model(model, args.project, args.region, args.api_endpoint)
    print(f"model: {name}")
    print(f"serving image: {image}")
    return 0


def _submit_from_flags(args: list[str]) -> int:
    if FLAGS.upload_model:
        return register(FLAGS)
    if FLAGS.predict and (FLAGS.config or FLAGS.set):
        raise UserError("--config or --set with --predict, command line, expected the model's "
                        "own settings only (--model, --inputs, --out)")
    return submit(FLAGS)


def _required(values: flags.FlagValues) -> tuple[str, ...]:
    """A model to register needs a project; a curation job its model, inputs and output folder;
    a training job its config and a staging bucket."""
    if values.upload_model:
        return ("project",)
    if values.predict:
        return ("model", "inputs", "out", "project")
    return ("config", "project", "staging_bucket")


main = cli.Command(_submit_from_flags, FLAGS, required=_required)

if __name__ == "__main__":
    main.run()
