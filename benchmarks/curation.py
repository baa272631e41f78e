"""Batch curation throughput: frames/s of `trainer.predict --out` on one replica and on two
replicas sharing the inputs (figures, not tests).

    python benchmarks/curation.py [--dir /tmp/trainer-curation] [--videos 4] [--frames 750]

Writes `--videos` MP4 files of `--frames` frames (`--size` px square, RGB, as a camera gives
them) and trains seed 001's `contact_cnn` on 64x64 greyscale frames for one short epoch (the
weights do not change the speed). Then prints:
- the frame decoder alone (PyAV, colour conversion and resize: `trainer.data.video`), frames/s;
- decode + predict in this process, model loaded (`trainer.predict.predict`), frames/s;
- `python -m trainer.predict --out` end to end (start-up, model load, decode, predict, the
  results published whole), one replica, and two replicas started together, each told its
  place by CLUSTER_SPEC as on Vertex AI: frames/s over the wall time until the last one ends;
- the machine: its cores and its load average before and after, since a shared machine's
  figures move with what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_videos(folder: str, videos: int, frames: int, size: int) -> list[str]:
    import av

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for v in range(videos):
        path = os.path.join(folder, f"session{v:02d}.mp4")
        paths.append(path)
        if os.path.exists(path):
            continue
        with av.open(path + ".partial", "w", format="mp4") as out:
            stream = out.add_stream("mpeg4", rate=30)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            base = rng.integers(20, 60, (size, size, 3), np.uint8)
            for t in range(frames):
                img = base.copy()
                col = int(size * (0.3 + 0.4 * (t % 50) / 50))  # a whisker sweeping to the pole
                img[size // 3: size // 3 + size // 20, :col] = 200
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode())
        os.replace(path + ".partial", path)
    return paths


def train_model(folder: str) -> str:
    """A contact_cnn run on 64x64 greyscale frames; returns its run folder."""
    from trainer import config, job
    from trainer.runtime.platform import Platform

    run = os.path.join(folder, "runs", "contact")
    if os.path.exists(os.path.join(run, "model.h5")):
        return run
    rng = np.random.default_rng(1)
    x = rng.normal(0.2, 0.05, (256, 64, 64, 1)).astype(np.float32)
    y = rng.integers(0, 2, 256)
    np.savez(os.path.join(folder, "train.npz"), x=x, y=y)
    cfg = config.load(None, ["name=contact", "model.name=contact_cnn", "data.format=npz",
                             f"data.train={folder}/train.npz", "train.epochs=1",
                             "output.report=false", "output.plots=false"],
                      output_dir=os.path.join(folder, "runs"))
    job.run(cfg, Platform())
    return run


def rate(frames: int, seconds: float) -> str:
    return f"{frames / seconds:8,.0f} frames/s ({frames} frames in {seconds:.1f} s)"


def replicas(run: str, videos: str, out: str, count: int, batch_size: int) -> float:
    """Wall seconds for `count` replica processes of `trainer.predict --out` to all end."""
    shutil.rmtree(out, ignore_errors=True)
    procs, start = [], time.perf_counter()
    for index in range(count):
        spec = {"cluster": {"workerpool0": ["w0:2222"], **({"workerpool1": [
                    f"w{i}:2222" for i in range(1, count)]} if count > 1 else {})},
                "environment": "cloud",
                "task": {"type": "workerpool0" if index == 0 else "workerpool1",
                         "index": max(index - 1, 0)}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CLUSTER_SPEC=json.dumps(spec),
                   PYTHONPATH=ROOT)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainer.predict", "--model", run, "--out", out,
             "--batch_size", str(batch_size), "--poll_seconds", "0.2", videos],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"a replica failed: {err[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/trainer-curation")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args()
    load_before = os.getloadavg()

    paths = write_videos(os.path.join(args.dir, "videos"), args.videos, args.frames, args.size)
    run = train_model(args.dir)
    total = args.videos * args.frames
    from trainer import predict
    from trainer.data import images, video

    start = time.perf_counter()
    decoded = sum(1 for p in paths for _ in video.decode_frames(p, images.ImageSpec((64, 64), 1)))
    decode_s = time.perf_counter() - start
    saved = predict.load(run)
    list(predict.predict(saved, paths[:1], args.batch_size))  # the model's first call traced
    start = time.perf_counter()
    predicted = sum(1 for _ in predict.predict(saved, paths, args.batch_size))
    predict_s = time.perf_counter() - start
    assert decoded == predicted == total, (decoded, predicted, total)

    one = replicas(run, os.path.join(args.dir, "videos"), os.path.join(args.dir, "out1"), 1,
                   args.batch_size)
    two = replicas(run, os.path.join(args.dir, "videos"), os.path.join(args.dir, "out2"), 2,
                   args.batch_size)
    print(f"inputs: {args.videos} MP4 videos of {args.frames} frames, {args.size}x{args.size} RGB; "
          f"model: contact_cnn on 64x64x1; batch {args.batch_size}")
    print(f"decode only (this process):               {rate(total, decode_s)}")
    print(f"decode + predict (this process):          {rate(total, predict_s)}")
    print(f"trainer.predict --out, 1 replica:         {rate(total, one)}")
    print(f"trainer.predict --out, 2 replicas:        {rate(total, two)}")
    print(f"machine: {os.cpu_count()} cores; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
