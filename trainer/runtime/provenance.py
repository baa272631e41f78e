"""Where and with what a run ran, as its report shows it: the platform it was given, the host,
Python, package versions and devices."""

from __future__ import annotations

import importlib.metadata
import platform as host

from trainer.runtime.devices import accelerators
from trainer.runtime.platform import Platform

PACKAGES = ("trainer", "tensorflow", "tf-keras", "numpy", "h5py", "matplotlib", "optuna")


def provenance(platform: Platform) -> dict:
    """Where and with what a run ran, for its report: host, Python, package versions, devices."""
    from trainer.kerasflavor import tf

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"where": where(platform), "host": host.node(),
            "python": host.python_version(), "platform": host.platform(),
            "devices": accelerators().describe(),
            "tensorflow devices": ", ".join(d.name for d in tf.config.list_logical_devices()),
            "packages": versions}


def where(platform: Platform) -> str:
    """The platform in a few words: a local run, or the Vertex AI job (and trial, and replica)."""
    if not platform.vertex:
        return "local"
    parts = [f"Vertex AI job {platform.job_id or '(no job id)'}"]
    if platform.trial_id:
        parts.append(f"trial {platform.trial_id}")
    if platform.multi_worker:
        parts.append(f"{platform.task_type} {platform.task_index} of {platform.workers}")
    return ", ".join(parts)
