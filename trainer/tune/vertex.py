"""The same search as a Vertex AI HyperparameterTuningJob: the space in the API's terms.

Translation:
  uniform / log_uniform      -> DOUBLE (or INTEGER when both bounds are integers), linear / log scale
  choice / grid of numbers   -> DISCRETE;  of strings or booleans -> CATEGORICAL
  every parameter a grid     -> algorithm GRID_SEARCH (otherwise Vertex's default, Bayesian)
  metric and direction       -> MetricSpec (the trials report it through cloudml-hypertune)
  pruning                    -> median automated stopping
Parameter ids are the config keys themselves (`train.learning_rate`): Vertex passes each as
`--train.learning_rate=VALUE` to the trial's command, `trainer.tune.vertex_trial`, which turns
them into `--set` overrides.

The types build offline, so `--dry_run` and the tests need no credentials. Each trial's machines
and image come from `trainer.cloud.vertex_job`, the builder `trainer.submit` uses too.
"""

from __future__ import annotations

from typing import Optional, Sequence

from google.cloud import aiplatform_v1 as vertex

from trainer.cloud import vertex_job
from trainer.cloud.vertex_job import Machines
from trainer.errors import UserError
from trainer.tune.space import Param, Space

TRIAL_MODULE = "trainer.tune.vertex_trial"


def _numeric(values: tuple) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def parameter_spec(p: Param) -> vertex.StudySpec.ParameterSpec:
    spec = vertex.StudySpec.ParameterSpec
    scale = spec.ScaleType.UNIT_LOG_SCALE if p.log else spec.ScaleType.UNIT_LINEAR_SCALE
    if p.kind in ("uniform", "log_uniform"):
        if p.integer:
            return spec(parameter_id=p.key, scale_type=scale,
                        integer_value_spec=spec.IntegerValueSpec(min_value=p.low, max_value=p.high))
        return spec(parameter_id=p.key, scale_type=scale,
                    double_value_spec=spec.DoubleValueSpec(min_value=float(p.low),
                                                           max_value=float(p.high)))
    if _numeric(p.values):
        return spec(parameter_id=p.key, scale_type=spec.ScaleType.UNIT_LINEAR_SCALE,
                    discrete_value_spec=spec.DiscreteValueSpec(
                        values=sorted(float(v) for v in set(p.values))))
    if any(v is None for v in p.values):
        raise UserError(f"null among the values of '{p.key}', {p.key}, expected values Vertex AI "
                        "can pass on a command line")
    return spec(parameter_id=p.key, categorical_value_spec=spec.CategoricalValueSpec(
        values=[str(v).lower() if isinstance(v, bool) else str(v) for v in p.values]))


def _expressed(p: Param, source: str) -> vertex.StudySpec.ParameterSpec:
    """The parameter's spec; a value the API's types cannot hold (an integer beyond 64 bits)
    is the space's fault, named as such."""
    try:
        return parameter_spec(p)
    except (ValueError, TypeError, OverflowError) as exc:
        raise UserError(f"cannot express '{p.key}' for Vertex AI ({exc}), {source} params, "
                        "expected numbers the API holds (64-bit integers, doubles)") from None


def study_spec(space: Space) -> vertex.StudySpec:
    goal = vertex.StudySpec.MetricSpec.GoalType
    spec = vertex.StudySpec(
        metrics=[vertex.StudySpec.MetricSpec(
            metric_id=space.metric,
            goal=goal.MAXIMIZE if space.direction == "maximize" else goal.MINIMIZE)],
        parameters=[_expressed(p, space.source) for p in space.params],
        algorithm=(vertex.StudySpec.Algorithm.GRID_SEARCH if space.grid_only
                   else vertex.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED),
    )
    if space.pruning.enabled:
        spec.median_automated_stopping_spec = vertex.StudySpec.MedianAutomatedStoppingSpec(
            use_elapsed_duration=False)
    return spec


def trial_args(config_url: Optional[str], overrides: Sequence[str], study_url: str) -> list[str]:
    """The trial command's arguments: the search's base config, as `trainer.task` takes it."""
    args = ["--config", config_url] if config_url else []
    return args + [f"--set={o}" for o in overrides] + ["--output_dir", study_url]


def tuning_job(name: str, space: Space, trials: int, parallel: int, config_url: Optional[str],
               overrides: Sequence[str], study_url: str,
               machines: Machines) -> vertex.HyperparameterTuningJob:
    """Each trial is a custom job of the same shape as `trainer.submit`'s, running the trial
    command; its runs go under `study_url`."""
    trial = vertex_job.job_spec(machines, trial_args(config_url, overrides, study_url), study_url,
                                command=["python", "-m", TRIAL_MODULE])
    return vertex.HyperparameterTuningJob(
        display_name=name, study_spec=study_spec(space), max_trial_count=trials,
        parallel_trial_count=parallel, max_failed_trial_count=max(1, trials // 2),
        trial_job_spec=trial)
