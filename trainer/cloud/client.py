"""Sending a built job, or a model to register, to Vertex AI through the client library's REST
transport."""

from __future__ import annotations

import re
from typing import Optional

from google.cloud import aiplatform_v1 as v1

from trainer.errors import UserError


def send(job, project: str, region: str, api_endpoint: Optional[str] = None):
    """Create the job (a CustomJob, or a HyperparameterTuningJob); returns the created job.

    An http:// endpoint, such as a local test server, is sent no credentials. A job on a
    persistent resource is first checked against the machines the resource holds."""
    spec = job.trial_job_spec if isinstance(job, v1.HyperparameterTuningJob) else job.job_spec
    if spec.persistent_resource_id:
        check_persistent_resource(spec, project, region, api_endpoint)

    def create(parent: str):
        client = _client(v1.JobServiceClient, region, api_endpoint)
        if isinstance(job, v1.HyperparameterTuningJob):
            return client.create_hyperparameter_tuning_job(parent=parent,
                                                           hyperparameter_tuning_job=job)
        return client.create_custom_job(parent=parent, custom_job=job)

    return _call(create, project, region, "job")


def check_persistent_resource(spec, project: str, region: str,
                              api_endpoint: Optional[str] = None) -> None:
    """A job on a persistent resource runs only on the machines the resource holds: each worker
    pool's machine (type, GPU type and count) must be one of its resource pools, with room for
    the pool's replicas. Asked of the API before the job is sent, so a misfit is one line here
    rather than a job that waits or fails there."""
    resource_id = spec.persistent_resource_id
    flag = f"--persistent_resource={resource_id}"

    def get(parent: str):
        client = _client(v1.PersistentResourceServiceClient, region, api_endpoint)
        return client.get_persistent_resource(name=f"{parent}/persistentResources/{resource_id}")

    resource = _call(get, project, region, "persistent resource")

    def key(machine) -> tuple:
        return (machine.machine_type, int(machine.accelerator_type), machine.accelerator_count)

    room: dict[tuple, int] = {}
    for pool in resource.resource_pools:
        most = max(pool.replica_count, pool.autoscaling_spec.max_replica_count)
        room[key(pool.machine_spec)] = room.get(key(pool.machine_spec), 0) + most
    for pool in spec.worker_pool_specs:
        machine = pool.machine_spec
        want = key(machine)
        if want not in room:
            gpus = (f" with {machine.accelerator_count} {machine.accelerator_type.name}"
                    if machine.accelerator_count else "")
            held = ", ".join(sorted({k[0] for k in room})) or "none"
            raise UserError(f"persistent resource {resource_id} holds no {machine.machine_type}"
                            f"{gpus} (it holds: {held}), {flag}, expected the job's machines to "
                            "be those of one of its resource pools")
        room[want] -= pool.replica_count
        if room[want] < 0:
            raise UserError(f"persistent resource {resource_id} holds too few "
                            f"{machine.machine_type} for the job's replicas, {flag}, expected at "
                            "most as many replicas as its resource pool may grow to")


def upload_model(model, project: str, region: str, api_endpoint: Optional[str] = None,
                 timeout: float = 1800) -> str:
    """Register `model` (a v1.Model) in the Model Registry; returns the new model's name
    (`projects/P/locations/R/models/ID`) once Vertex AI has imported it."""
    def upload(parent: str):
        operation = _client(v1.ModelServiceClient, region, api_endpoint).upload_model(
            parent=parent, model=model)
        return operation.result(timeout=timeout).model

    return _call(upload, project, region, "model")


def _client(kind, region: str, api_endpoint: Optional[str]):
    """A client of the REST transport; an http:// endpoint is sent no credentials."""
    from google.auth.credentials import AnonymousCredentials

    endpoint = api_endpoint or f"{region}-aiplatform.googleapis.com"
    credentials = AnonymousCredentials() if endpoint.startswith("http://") else None
    return kind(credentials=credentials, transport="rest",
                client_options={"api_endpoint": endpoint})


def _call(request, project: str, region: str, what: str):
    """`request(parent)`, its failures as one line: no credentials, or the API's refusal."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    if not project:
        raise UserError("no project given, --project, expected a Google Cloud project id to "
                        "submit to (or --dry_run to only show the spec)")
    parent = f"projects/{project}/locations/{region}"
    try:
        return request(parent)
    except auth_exceptions.DefaultCredentialsError:
        raise UserError(f"no Google Cloud credentials, {parent}, expected `gcloud auth "
                        "application-default login` or a service account") from None
    except exceptions.GoogleAPICallError as exc:
        raise UserError(refusal(exc, parent, what)) from None


_EXPECTED = {
    "PERMISSION_DENIED": "an account that may create Vertex AI {what}s in the project (e.g. role "
                         "roles/aiplatform.user)",
    "RESOURCE_EXHAUSTED": "quota for the machine and accelerator in the region (or another region)",
    "INVALID_ARGUMENT": "a {what} the API accepts (see the field in the message)",
    "NOT_FOUND": "a {what} that exists in the project and region (check its name and --region)",
}


def refusal(exc, parent: str, what: str = "job") -> str:
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
    expected = _EXPECTED.get(status, "a {what} the project may create (see the message)")
    return (f"Vertex AI refused the {what} ({exc.code} {status}: {message}), {parent}, expected "
            f"{expected.format(what=what)}")
