"""Sending a built job, or a model to register, to Vertex AI through the client library's REST
transport."""

from __future__ import annotations

import re
from typing import Optional

from google.cloud import aiplatform_v1 as v1

from trainer.errors import UserError


def send(job, project: str, region: str, api_endpoint: Optional[str] = None):
    """Create the job (a CustomJob, or a HyperparameterTuningJob); returns the created job.

    An http:// endpoint, such as a local test server, is sent no credentials."""
    def create(parent: str):
        client = _client(v1.JobServiceClient, region, api_endpoint)
        if isinstance(job, v1.HyperparameterTuningJob):
            return client.create_hyperparameter_tuning_job(parent=parent,
                                                           hyperparameter_tuning_job=job)
        return client.create_custom_job(parent=parent, custom_job=job)

    return _call(create, project, region, "job")


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
