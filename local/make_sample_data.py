"""Write small synthetic data sets in the layouts of the seeds' jobs, for the configs beside this.

    python local/make_sample_data.py            # writes local/data/<job>/...
    python -m trainer.task --config local/configs/hexagonal.yaml

Each set has a learnable signal, so a short run shows real learning. They stand in for the users'
own arrays: swap `data.train` for your files and keep the rest of the config.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def contact_frames(n: int, rng: np.random.Generator, size: int = 64):
    """Seed 001: greyscale video frames; 'touch' when the whisker tip reaches the pole (imbalanced)."""
    y = (rng.random(n) < 0.3).astype(np.int64)  # about 30% touch frames, as in curated videos
    yy, xx = np.mgrid[0:size, 0:size]
    x = rng.normal(0.2, 0.05, size=(n, size, size)).astype(np.float32)
    for i in range(n):
        px, py = rng.integers(size // 4, 3 * size // 4, size=2)
        x[i] += 0.8 * ((xx - px) ** 2 + (yy - py) ** 2 < 9)  # the pole
        gap = 0 if y[i] else rng.integers(6, size // 4)
        tip = px - 3 - gap
        row = np.clip(py + rng.integers(-2, 3), 0, size - 1)
        x[i, row, :max(tip, 1)] += 0.6  # the whisker, a line from the left edge
    return (np.clip(x, 0, 1) * 255).astype(np.uint8), y


def hexagonal_lattices(n: int, rng: np.random.Generator, size: int = 32):
    """Seed 000: 32x32 lattice images; targets are the lattice spacing and rotation angle."""
    spacing = rng.uniform(3.0, 7.0, n)
    angle = rng.uniform(0.0, np.pi / 3, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = np.empty((n, size, size), np.float32)
    for i in range(n):
        k = 4 * np.pi / (np.sqrt(3) * spacing[i])
        img = sum(np.cos(k * (np.cos(angle[i] + j * np.pi / 3) * xx + np.sin(angle[i] + j * np.pi / 3) * yy))
                  for j in range(3))
        x[i] = img + rng.normal(0, 0.3, (size, size))
    return x, np.stack([spacing, angle], axis=1).astype(np.float32)


def field_slices(n: int, rng: np.random.Generator, size: int = 256):
    """Seed 002: 256x256 simulation slices; the target is the amplitude of a smooth random field."""
    amplitude = rng.uniform(0.5, 2.0, n).astype(np.float32)
    freq = np.fft.fftfreq(size)
    kk = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    power = np.where(kk > 0, 1.0 / (kk + 0.02) ** 1.5, 0.0)
    x = np.empty((n, size, size, 1), np.float32)
    for i in range(n):
        noise = np.fft.fft2(rng.normal(size=(size, size)))
        field = np.real(np.fft.ifft2(noise * np.sqrt(power)))
        x[i, ..., 0] = amplitude[i] * field / field.std()
    return x, amplitude


def digits(n: int, rng: np.random.Generator, size: int = 28):
    """Seed 003: MNIST-like 28x28 digits drawn with PIL's built-in font, jittered and scaled."""
    from PIL import Image, ImageDraw

    y = rng.integers(0, 10, n)
    x = np.empty((n, size, size), np.uint8)
    for i in range(n):
        small = Image.new("L", (10, 14), 0)
        ImageDraw.Draw(small).text((2, 1), str(y[i]), fill=255)
        scale = rng.uniform(1.4, 1.9)
        glyph = small.resize((int(10 * scale), int(14 * scale)))
        canvas = Image.new("L", (size, size), 0)
        ox = rng.integers(0, size - glyph.width + 1)
        oy = rng.integers(0, size - glyph.height + 1)
        canvas.paste(glyph, (int(ox), int(oy)))
        x[i] = np.asarray(canvas)
    return x, y


def shapes(n: int, rng: np.random.Generator, size: int = 64):
    """Seed 004: RGB circles, squares and triangles, labels as class names."""
    from trainer.data import demo

    x, y = demo.generate(max(1, n // 3), (size, size), int(rng.integers(1 << 30)))
    return x, y


def write_npz_shards(x, y, folder: str, shards: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, (xs, ys) in enumerate(zip(np.array_split(x, shards), np.array_split(y, shards))):
        np.savez(os.path.join(folder, f"shard-{i:03d}.npz"), x=xs, y=ys)


def write_npy_pairs(x, y, folder: str, shards: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, (xs, ys) in enumerate(zip(np.array_split(x, shards), np.array_split(y, shards))):
        np.save(os.path.join(folder, f"x{i:03d}.npy"), xs)
        np.save(os.path.join(folder, f"y{i:03d}.npy"), ys)


# job -> (generator, writer, samples, shards); the folder is <out>/<job>/
JOBS = {
    "contact": (contact_frames, write_npz_shards, 1200, 4),
    "hexagonal": (hexagonal_lattices, write_npy_pairs, 2000, 4),
    "cubes": (field_slices, write_npz_shards, 64, 2),
    "digits": (digits, write_npz_shards, 2000, 2),
    "shapes": (shapes, write_npz_shards, 900, 3),
}


def make(job: str, out: str, samples: int | None = None, seed: int = 0) -> str:
    make_fn, write_fn, default_n, shards = JOBS[job]
    x, y = make_fn(samples or default_n, np.random.default_rng(seed))
    folder = os.path.join(out, job)
    write_fn(x, y, folder, shards)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--jobs", nargs="*", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--samples", type=int, default=None, help="samples per job (default: per job)")
    args = parser.parse_args()
    for job in args.jobs:
        print(f"{job}: {make(job, args.out, args.samples)}")


if __name__ == "__main__":
    main()
