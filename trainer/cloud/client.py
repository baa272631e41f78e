"""Sending a built job to Vertex AI, through the client library's REST transport."""

from __future__ import annotations

import re
from typing import Optional

from google.cloud import aiplatform_v1 as v1

from trainer.errors import UserError


def send(job, project: str, region: str, api_endpoint: Optional[str] = None):
    """Create the job (a CustomJob, or a HyperparameterTuningJob); returns the created job.

    An http:// endpoint, such as a local test server, is sent no credentials."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.auth.credentials import AnonymousCredentials

    if not project:
        raise UserError("no project given, --project, expected a Google Cloud project id to "
                        "submit to (or --dry_run to only show the spec)")
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
