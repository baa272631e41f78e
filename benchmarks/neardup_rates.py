"""How often the near-duplicate leakage check (`trainer.data.neardup`, used by datacheck) is
right: its false-positive rate on data with no leakage, and its true-positive rate on planted
near-copies.

    python benchmarks/neardup_rates.py [--samples 1200] [--seed 0]

No leakage: the demo shapes, hexagonal lattice images (seed 000), simulation field slices (seed
002), whisker video frames (seed 001, one frame per draw) and drifting videos split by video
(each video's frames are near-copies of each other, but no video is in two splits). Each set is
split at random 80/20 (the videos by video) and every validation sample is checked against the
training split: a flagged sample is a false positive; the warning fires when more than
`LEAK_WARN` of a split is flagged.

Planted: a fifth of each validation split gets a copy in the training split, changed the way
real near-copies differ (pixel noise, brightness and contrast, a shift of one pixel, the next
frame of a video); the fraction of them flagged is the true-positive rate. The drifting videos
split by frame at random, the leak the check exists for, are measured too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.data import demo, neardup  # noqa: E402


def _samples_module():
    path = os.path.join(os.path.dirname(__file__), "..", "local", "make_sample_data.py")
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def drifting_videos(videos: int, frames: int, rng: np.random.Generator, size: int = 32):
    """Frames of slowly drifting plane-wave scenes plus noise, one scene per video: neighbouring
    frames are near-copies, frames of other videos are not. Returns (frames, video index)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    x = np.empty((videos, frames, size, size), np.float32)
    for v in range(videos):
        freq = rng.normal(0, 1.5, (6, 2, 1, 1))
        amp, phase = rng.uniform(0.5, 1.0, (6, 1, 1)), rng.uniform(0, 2 * np.pi, (6, 1, 1))
        speed = rng.normal(0, 0.1, (6, 1, 1))
        for t in range(frames):
            angle = 2 * np.pi * (freq[:, 0] * xx + freq[:, 1] * yy) + phase + t * speed
            x[v, t] = (amp * np.cos(angle)).sum(axis=0) + rng.normal(0, 0.2, (size, size))
    return x.reshape(-1, size, size, 1), np.repeat(np.arange(videos), frames)


def leak_free_sets(n: int, rng: np.random.Generator) -> dict:
    """name -> (images, groups or None): data whose samples are all distinct draws."""
    samples = _samples_module()
    shapes, _ = demo.generate(n // 3, (32, 32), int(rng.integers(1 << 30)))
    lattices, _ = samples.hexagonal_lattices(n, rng)
    fields, _ = samples.field_slices(n, rng, size=64)
    whiskers, _ = samples.contact_frames(n, rng)
    videos, video = drifting_videos(n // 20, 20, rng)
    return {"demo shapes": (shapes, None), "lattice images (000)": (lattices, None),
            "simulation slices (002)": (fields, None), "whisker frames (001)": (whiskers, None),
            "videos split by video": (videos, video)}


def split(x: np.ndarray, groups, rng: np.random.Generator, val: float = 0.2):
    """(train, val) row numbers, at random by sample, or by group when groups are given."""
    if groups is None:
        order = rng.permutation(len(x))
        cut = int(len(x) * val)
        return np.sort(order[cut:]), np.sort(order[:cut])
    names = rng.permutation(np.unique(groups))
    held = np.isin(groups, names[:max(1, int(len(names) * val))])
    return np.flatnonzero(~held), np.flatnonzero(held)


def near_copy(img: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """`img` changed the way a real near-copy differs from it, in its own dtype."""
    out = img.astype(np.float32)
    spread = float(out.std()) or 1.0
    if how == "noise":
        out = out + rng.normal(0, 0.1 * spread, img.shape)
    elif how == "brightness":
        out = 0.8 * out + 0.3 * spread
    elif how == "shift":
        out = np.roll(out, 1, axis=1)
    if img.dtype == np.uint8:
        out = np.clip(np.round(out), 0, 255)
    return out.astype(img.dtype)


def check(x: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
          planted: np.ndarray = None) -> neardup.Leak:
    """The datacheck estimate for one split; `planted` images join the training split after
    the data's last row (copies saved elsewhere, not beside their originals)."""
    train = neardup.fingerprints(x[train_rows])
    if planted is not None:
        train = np.concatenate([train, neardup.fingerprints(planted)])
        train_rows = np.concatenate([train_rows, len(x) + 10 + np.arange(len(planted))])
    return neardup.leak_estimate(neardup.fingerprints(x[val_rows]), val_rows, train, train_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1200, help="images per data set")
    parser.add_argument("--repeats", type=int, default=3, help="draws of each data set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"near-copy: fingerprint distance < {neardup.THRESHOLD:g}; warning: near-copies in "
          f"{neardup.LEAK_EXCESS:.0%} more of a split than chance gives, or near-copies that are "
          f"neighbours in the data's order in {neardup.LEAK_EXCESS:.0%} of it")
    print(f"planted: a copy of {PLANTED:.0%} of the validation samples in the training split\n")
    print(f"{'data':24s} {'case':20s} {'near-copies':>11s} {'by chance':>9s} {'neighbours':>10s} "
          f"{'warned':>6s}")
    clean, planted = [], []
    per_set: dict = {}
    for repeat in range(args.repeats):
        rng = np.random.default_rng([args.seed, repeat])
        for name, (x, groups) in leak_free_sets(args.samples, rng).items():
            train, val = split(x, groups, rng)
            cases = [("no leakage", train, val, None, False)]
            copied = x[val[: int(len(val) * PLANTED)]]
            for how in ("noise", "brightness", "shift"):
                copies = np.stack([near_copy(img, how, rng) for img in copied])
                cases.append((f"planted, {how}", train, val, copies, True))
            if groups is not None:  # the same frames split at random: the leak itself
                cases.append(("split by frame", *split(x, None, rng), None, True))
            for case, train_rows, val_rows, copies, leaked in cases:
                leak = check(x, train_rows, val_rows, copies)
                if case != "planted, shift":  # reported, not counted: see the README
                    (planted if leaked else clean).append(leak.leaks)
                    per_set.setdefault((name, leaked), []).append(leak.leaks)
                if repeat == 0:
                    print(f"{name:24s} {case:20s} {leak.observed:11.3f} {leak.expected:9.3f} "
                          f"{leak.neighbours:10.3f} {'yes' if leak.leaks else 'no':>6s}")
    print(f"\n{'data':24s} {'false positives':>15s} {'true positives':>15s}")
    for name in dict.fromkeys(n for n, _ in per_set):
        no, yes = per_set.get((name, False), []), per_set.get((name, True), [])
        print(f"{name:24s} {f'{sum(no)}/{len(no)}':>15s} {f'{sum(yes)}/{len(yes)}':>15s}")
    print(f"\nfalse-positive rate: {np.mean(clean):.3f} ({sum(clean)} warnings in {len(clean)} "
          "leak-free splits)")
    print(f"true-positive rate:  {np.mean(planted):.3f} ({sum(planted)} warnings in "
          f"{len(planted)} leaking splits: noise and brightness copies, video frames)")


PLANTED = 0.2


if __name__ == "__main__":
    main()
