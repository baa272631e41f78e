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


def write_npy_csv(x, y, folder: str, shards: int) -> None:
    """Seed 000 as its users have it: one .npy array per image and a CSV naming each file with
    its two float targets (the dataframe of its notebook)."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    with open(os.path.join(folder, "labels.csv"), "w") as f:
        f.write("filename,spacing,angle\n")
        for i, (img, (spacing, angle)) in enumerate(zip(x, y)):
            np.save(os.path.join(folder, "images", f"lattice_{i:05d}.npy"), img)
            f.write(f"images/lattice_{i:05d}.npy,{spacing:.6f},{angle:.6f}\n")


def write_png_folders(x, y, folder: str, shards: int, names=("no_touch", "touch")) -> None:
    """Seed 001's second way in: one folder per class of 16-bit greyscale PNG frames."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y)):
        sub = os.path.join(folder, names[int(label)])
        os.makedirs(sub, exist_ok=True)
        # 8-bit frames scaled to the 16-bit range, as a scientific camera saves them
        Image.fromarray(img.astype(np.uint16) * 257).save(os.path.join(sub, f"frame_{i:05d}.png"))


def write_videos(x, y, folder: str, shards: int) -> None:
    """Seed 001's first way in: MP4 videos (written with PyAV) and a MATLAB label vector per
    frame, then `trainer.convert --video` turns them into TFRecord shards with a group per
    video (the config trains on those)."""
    import av
    import scipy.io

    from trainer import convert

    os.makedirs(folder, exist_ok=True)
    videos = []
    for v, (frames, labels) in enumerate(zip(np.array_split(x, shards), np.array_split(y, shards))):
        path = os.path.join(folder, f"session_{v}.mp4")
        with av.open(path, "w") as out:
            stream = out.add_stream("mpeg4", rate=30)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for img in frames:
                rgb = np.repeat(img[..., None], 3, axis=2)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            out.mux(stream.encode())
        videos.append(path)
    # One label per frame of all videos in order (a double vector, as MATLAB saves it).
    scipy.io.savemat(os.path.join(folder, "labels.mat"), {"touch": y.astype(np.float64)[:, None]})
    code = convert.run(None, ["data.color=grey"], os.path.join(folder, "shards"), "tfrecord", 4096,
                       False, videos, os.path.join(folder, "labels.mat"), None)
    if code:
        raise SystemExit(code)


def write_hdf5_cubes(x, y, folder: str, shards: int) -> None:
    """Seed 002 as its users have it: one HDF5 file of channel-first cubes, (N, 1, H, W), as
    PyTorch takes them; row ranges pick the training and test seeds."""
    import h5py

    os.makedirs(folder, exist_ok=True)
    with h5py.File(os.path.join(folder, "cubes.h5"), "w") as f:
        f.create_dataset("x", data=np.moveaxis(x, -1, 1))
        f.create_dataset("y", data=y)


def write_png_classes(x, y, folder: str, shards: int) -> None:
    """Seed 004 as its users have it: data/shapes/<class>/*.png, RGB, not all the same size."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y)):
        sub = os.path.join(folder, str(label))
        os.makedirs(sub, exist_ok=True)
        picture = Image.fromarray(img.astype(np.uint8))
        if i % 5 == 4:  # every fifth image at another size, as a folder gathered by hand has
            picture = picture.resize((picture.width * 5 // 4, picture.height * 5 // 4))
        picture.save(os.path.join(sub, f"{label}_{i:04d}.png"))


# job -> (generator, writer, samples, shards); the folder is <out>/<job>/
JOBS = {
    "contact": (contact_frames, write_npz_shards, 1200, 4),
    "contact_folders": (contact_frames, write_png_folders, 600, 1),
    "contact_video": (contact_frames, write_videos, 600, 4),
    "hexagonal": (hexagonal_lattices, write_npy_pairs, 2000, 4),
    "hexagonal_csv": (hexagonal_lattices, write_npy_csv, 1000, 1),
    "cubes": (field_slices, write_npz_shards, 64, 2),
    "cubes_hdf5": (field_slices, write_hdf5_cubes, 64, 1),
    "digits": (digits, write_npz_shards, 2000, 2),
    "shapes": (shapes, write_npz_shards, 900, 3),
    "shapes_folder": (shapes, write_png_classes, 300, 1),
}


def make(job: str, out: str, samples: int | None = None, seed: int = 0,
         size: int | None = None) -> str:
    """Write job's sample data under `out/<job>/`; `size` overrides its image size (tests)."""
    make_fn, write_fn, default_n, shards = JOBS[job]
    rng = np.random.default_rng(seed)
    x, y = make_fn(samples or default_n, rng) if size is None else make_fn(samples or default_n,
                                                                          rng, size=size)
    folder = os.path.join(out, job)
    write_fn(x, y, folder, shards)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--jobs", nargs="*", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--samples", type=int, default=None, help="samples per job (default: per job)")
    parser.add_argument("--size", type=int, default=None, help="image size (default: per job)")
    args = parser.parse_args()
    for job in args.jobs:
        print(f"{job}: {make(job, args.out, args.samples, size=args.size)}")


if __name__ == "__main__":
    main()
