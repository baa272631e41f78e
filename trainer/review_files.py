"""`predict --review`'s files: review.csv, review.mat and the contact sheets of the picked
frames (`review_ranking.Pick`), each finished locally and published whole into `--review_out`.
The contact sheets show the frames as the model saw them: their images are read again after the
ranking (a second decode of the videos that have picks, up to the last one)."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections import defaultdict
from typing import Sequence

import numpy as np

from trainer import storage
from trainer.review_ranking import Pick

TILE = 128  # pixels of a contact sheet tile's image
COLUMNS, ROWS = 6, 5
COLUMNS_CSV = ["input", "frame", "predicted", "probability", "score", "reason"]


def write(picks: Sequence[Pick], out: str, saved, files: Sequence[str]) -> list[str]:
    """review.csv, review.mat (when videos were among the inputs) and the contact sheets, each
    finished locally and copied whole into the folder `out`; returns what was written."""
    from trainer.data import video

    classification = bool(saved.class_names)
    videos = [f for f in files if video.is_video(f)]
    with tempfile.TemporaryDirectory(prefix="review-") as tmp:
        made = []
        path = os.path.join(tmp, "review.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS_CSV)
            writer.writerows(p.row(classification) for p in picks)
        made.append(path)
        if videos:
            path = os.path.join(tmp, "review.mat")
            write_mat(path, picks, videos, saved)
            made.append(path)
        made += contact_sheets(picks, saved, files, tmp)
        written = []
        for local in made:
            dest = storage.join(out, os.path.basename(local))
            storage.put_file(local, dest)
            written.append(dest)
    return written


def write_mat(path: str, picks: Sequence[Pick], videos: Sequence[str], saved) -> None:
    """Each video's picks as [frame from 1, label] rows in frame order, named as predict --mat
    names the video's labels (a video without picks: 0 x 2)."""
    import scipy.io

    from trainer.data import video

    rows: dict[str, list] = defaultdict(list)
    for p in picks:
        if p.frame is not None:
            label = saved.label(p.values)
            rows[p.input].append([p.frame + 1, *np.atleast_1d(label)])
    width = 2 if saved.class_names else 1 + int(saved.model.output_shape[-1])
    arrays = {name: np.array(sorted(rows[v]), dtype=np.float64).reshape(-1, width)
              for name, v in zip(video.variable_names(videos), videos)}
    scipy.io.savemat(path, arrays, do_compression=True)


def _images(picks: Sequence[Pick], saved, files: Sequence[str]) -> dict[tuple, np.ndarray]:
    """The picked frames' images, read again; each file read up to its last pick only."""
    from trainer.predict import read_inputs

    wanted: dict[str, set] = defaultdict(set)
    known = set(files)
    for p in picks:
        shard_row = p.input not in known and "[" in p.input  # `shard.npz[3]`: its file
        source = p.input[:p.input.rindex("[")] if shard_row else p.input
        wanted[source].add((p.input, p.frame))
    found = {}
    for source in files:
        keys = wanted.get(source)
        if not keys:
            continue
        for name, frame, image in read_inputs([source], saved.input_shape):
            if (name, frame) in keys:
                found[(name, frame)] = image
                if all(k in found for k in keys):
                    break
    return found


def _tile(image: np.ndarray, caption: list[str]):
    from PIL import Image, ImageDraw

    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi > 255 or lo < 0:  # not 8-bit values: stretched to show
        x = (x - lo) / max(hi - lo, 1e-12) * 255
    x = np.clip(x, 0, 255).astype(np.uint8)
    x = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
    picture = Image.fromarray(x).convert("RGB")
    scale = TILE / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)),
                              max(1, round(picture.height * scale))), Image.NEAREST)
    tile = Image.new("RGB", (TILE + 8, TILE + 12 * len(caption) + 8), "white")
    tile.paste(picture, (4, 4))
    draw = ImageDraw.Draw(tile)
    for k, line in enumerate(caption):
        draw.text((4, TILE + 6 + 12 * k), line, fill="black")
    return tile


def contact_sheets(picks: Sequence[Pick], saved, files: Sequence[str], folder: str) -> list[str]:
    """PNG grids of `COLUMNS` x `ROWS` tiles in rank order: sheet-001.png, sheet-002.png..."""
    from PIL import Image

    images = _images(picks, saved, files)
    per = COLUMNS * ROWS
    written = []
    for s in range(math.ceil(len(picks) / per)):
        tiles = []
        for rank, p in enumerate(picks[s * per:(s + 1) * per], start=s * per + 1):
            name = os.path.basename(p.input)
            where = f"frame {p.frame}" if p.frame is not None else ""
            value = (f"-> {p.values[0]} p={p.values[1]:.3f}" if saved.class_names
                     else f"spread {p.score:.3g}")
            tiles.append(_tile(images[(p.input, p.frame)],
                               [f"#{rank} {name[-20:]}", f"{where} {value}".strip()]))
        tw, th = tiles[0].size
        size = (tw * min(COLUMNS, len(tiles)), th * math.ceil(len(tiles) / COLUMNS))
        sheet = Image.new("RGB", size, "white")
        for k, tile in enumerate(tiles):
            sheet.paste(tile, ((k % COLUMNS) * tw, (k // COLUMNS) * th))
        path = os.path.join(folder, f"sheet-{s + 1:03d}.png")
        sheet.save(path)
        written.append(path)
    return written

