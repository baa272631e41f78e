"""Vertex AI Experiments, as `trainer.submit --experiment` and the chief's experiment log
(`trainer.callbacks.vertex_experiment`) both name and reach them: run names, the console page,
and the aiplatform SDK's settings for an endpoint (no TensorFlow imported here)."""

from __future__ import annotations

import re
from typing import Any, Optional

EXPERIMENT = re.compile(r"^projects/([^/]+)/locations/([^/]+)/metadataStores/[^/]+/contexts/"
                        r"([^/]+)$")


def run_name(name: str) -> str:
    """A run's name as Vertex AI Experiments takes it: lowercase letters, digits and `-`."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")[:100] or "run"


def console_url(project: str, location: str, experiment: str, run: str) -> str:
    """The experiment run's page in the Google Cloud console."""
    return (f"https://console.cloud.google.com/vertex-ai/experiments/locations/{location}/"
            f"experiments/{experiment}/runs/{experiment}-{run}?project={project}")


def sdk_options(endpoint: Optional[str]) -> dict[str, Any]:
    """`aiplatform.init` settings for another endpoint than Vertex AI's own: its REST transport,
    and no credentials for an http:// one (a local test server). Also quiets the SDK's
    progress lines, which would interleave with training's."""
    import logging

    logging.getLogger("google.cloud.aiplatform").setLevel(logging.WARNING)
    if not endpoint:
        return {}
    options: dict[str, Any] = {"api_endpoint": endpoint, "api_transport": "rest"}
    if endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        options["credentials"] = AnonymousCredentials()
    return options
