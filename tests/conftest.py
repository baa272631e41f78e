"""Shared helpers: small real data sets on disk and a way to run the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "local"))
# One folder per module family (docs/architecture.md); each is on the path, as tests/ itself is,
# so that a test module imports another's helpers by name wherever either of them lives.
for _entry in sorted(os.scandir(os.path.join(ROOT, "tests")), key=lambda e: e.name):
    if _entry.is_dir() and not _entry.name.startswith((".", "_")) and _entry.path not in sys.path:
        sys.path.append(_entry.path)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The longest test files, longest first (each file's setup, call and teardown times summed from
# `pytest --durations=0`, 2026-12-08: the three preemption files 520, 390 and 290 s, then 160 s
# down to 70 s). `make test` hands whole files to its processes in
# collection order (`--dist loadfile --no-loadscope-reorder`): started first, the long files run
# side by side and the short ones fill in at the end, instead of one long file running alone
# after the rest have finished. Files not named keep their place after these.
LONGEST_FIRST = [
    "training/test_preemption.py", "training/test_preemption_workers.py",
    "training/test_preemption_backups.py", "models/test_models.py", "models/test_imagenet_weights.py",
    "job/test_job.py", "hostile/test_hostile_input.py", "data/test_layouts.py",
    "commands/test_predict.py", "runtime/test_multiworker.py", "training/test_finetune.py",
    "models/test_backbones.py", "runtime/test_secrets.py", "project/test_benchmarks.py",
    "training/test_resume.py", "storage/test_storage_faults.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    tests = os.path.join(ROOT, "tests")
    items.sort(key=lambda item: rank.get(os.path.relpath(str(item.path), tests).replace(os.sep, "/"),
                                         len(rank)))


def blob_images(n: int, size: int = 16, seed: int = 0, channels: int = 0):
    """Images with one bright square; class = which half (left/right) it sits in, target = its x, y."""
    rng = np.random.default_rng(seed)
    cx = rng.integers(2, size - 4, n)
    cy = rng.integers(2, size - 4, n)
    x = rng.normal(0, 0.1, (n, size, size)).astype(np.float32)
    for i in range(n):
        x[i, cy[i]:cy[i] + 3, cx[i]:cx[i] + 3] += 1.0
    if channels:
        x = np.repeat(x[..., None], channels, axis=-1)
    label = (cx >= (size - 2) // 2).astype(np.int64)
    target = np.stack([cx, cy], axis=1).astype(np.float32) / size
    return x, label, target


def drifting_videos(videos: int, frames: int, seed: int, size: int = 16, drift: float = 0.1,
                    shown: float = 0.3):
    """Synthetic "videos": slowly drifting frames, one label per video; returns x, y, group.

    Each video has its own background, a sum of plane waves whose phases drift a little from
    frame to frame: a nuisance a network can memorise. The label shows in a fraction `shown` of
    the frames only, as a bright 3x3 square somewhere in the left (0) or right (1) half; the
    other frames hold nothing but their video's background. A model that remembers backgrounds
    scores near 1 on frames of videos it has seen, and about 0.5 + 0.5 x `shown` on new ones.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = rng.permutation(np.arange(videos) % 2)
    x = np.empty((videos, frames, size, size), np.float32)
    for v in range(videos):
        freq = rng.normal(0, 1.5, (6, 2, 1, 1))
        amp, phase = rng.uniform(0.5, 1.0, (6, 1, 1)), rng.uniform(0, 2 * np.pi, (6, 1, 1))
        speed = rng.normal(0, drift, (6, 1, 1))
        for t in range(frames):
            angle = 2 * np.pi * (freq[:, 0] * xx + freq[:, 1] * yy) + phase + t * speed
            x[v, t] = (amp * np.cos(angle)).sum(axis=0) + rng.normal(0, 0.2, (size, size))
            if rng.uniform() < shown:
                row = rng.integers(0, size - 3)
                col = rng.integers(0, size // 2 - 3) + labels[v] * size // 2
                x[v, t, row:row + 3, col:col + 3] += 5.0
    group = np.repeat([f"video{seed}-{v:03d}.mp4" for v in range(videos)], frames)
    return x.reshape(-1, size, size), np.repeat(labels, frames), group


def write_video(path, frames, codec: str = "mpeg4", rate: int = 10) -> str:
    """A real video file written by PyAV itself (FFmpeg's encoder): MP4 or AVI by the name."""
    import av

    frames = np.asarray(frames)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return str(path)


def contact_frames(n: int, seed: int, size: int = 32):
    """Seed 001-like frames: uint8 RGB (n, size, size, 3), a bright bar touching the left (0) or
    the right (1) half of a dim, noisy background; returns frames and their 0/1 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    frames = rng.integers(10, 50, (n, size, size, 3)).astype(np.uint8)
    for i, side in enumerate(labels):
        row = rng.integers(2, size - 10)
        col = rng.integers(2, size // 2 - 8) + side * size // 2
        frames[i, row:row + 8, col:col + 6] = 220
    return frames, labels


def write_npz(folder, name: str, x, y, **extra) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), name)
    np.savez(path, x=x, y=y, **extra)
    return path


def config_overrides(**kv) -> list[str]:
    return [f"{k}={v}" for k, v in kv.items()]


def error_line(stderr: str) -> str:
    """The one `error:` line that is all of stderr: no traceback, no warning, no TensorFlow
    start-up notice, nothing else before or after it."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


def run_cli(*args: str, module: str = "trainer.task", cwd: str = ROOT, timeout: int = 300,
            env: Optional[dict] = None):
    """Run the real entry point in a fresh interpreter, with `env` added to this process's
    environment and TensorFlow's log level as the image sets it; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def blob_npz(tmp_path):
    """Two-class npz shards (left/right bright square) under tmp_path/data."""
    x, label, _ = blob_images(240, seed=3)
    write_npz(tmp_path / "data", "a.npz", x[:120], label[:120])
    write_npz(tmp_path / "data", "b.npz", x[120:], label[120:])
    return str(tmp_path / "data" / "*.npz")


def run_job(output_dir, *overrides: str):
    """Run the real job in-process from `--set`-style overrides; returns (RunResult, Config).

    Without `saved_model/` unless the overrides ask for it (`output.saved_model=true`): the
    export adds about a second to every run, and only the serving tests read it."""
    from trainer import config, job
    from trainer.runtime.platform import Platform

    cfg = config.load(None, ["output.saved_model=false", *overrides], output_dir=str(output_dir))
    return job.run(cfg, Platform()), cfg


@pytest.fixture(scope="session")
def gcs():
    """A GCS emulator for the whole session; this process and its children use it."""
    import gcs_emulator

    emulator = gcs_emulator.start()
    previous = gcs_emulator.use(emulator)
    yield emulator
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    emulator.stop()
