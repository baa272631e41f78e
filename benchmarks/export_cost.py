"""What `saved_model/` costs a run, and what the exported decoder serves: for each model, the
seconds `servable.export` takes (the first export in the process, then the mean of the others),
and images per second through `serving_default` (PNG bytes in, decoded, resized, predicted).

    python benchmarks/export_cost.py [--models tiny_cnn hexagonal_cnn shapes_cnn] [--repeats 3]

Every run pays the export once (`output.saved_model: false` skips it).
"""

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from trainer import config
from trainer.models import build_model
from trainer.outputs import servable


def png(rng: np.random.Generator, size: tuple) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny_cnn", "hexagonal_cnn", "shapes_cnn"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shape = (32, 32, 3)
    files = tf.constant([png(rng, (48, 40)) for _ in range(args.images)])
    print(f"{'model':14} {'first export s':>15} {'next exports s':>15} {'served images/s':>16}")
    for name in args.models:
        cfg = config.from_dict({"model": {"name": name}})
        model = build_model(cfg, shape, 3)
        meta = {"task": "classification", "class_names": ["a", "b", "c"],
                "input_shape": list(shape), "num_outputs": 3}
        with tempfile.TemporaryDirectory() as tmp:
            seconds = []
            for i in range(args.repeats):
                started = time.perf_counter()
                reason = servable.export(model, meta, os.path.join(tmp, f"m{i}"))
                seconds.append(time.perf_counter() - started)
                assert reason is None, reason
            serve = tf.saved_model.load(os.path.join(tmp, "m0")).signatures["serving_default"]
            serve(image_bytes=files[:8])  # warm up
            started = time.perf_counter()
            serve(image_bytes=files)
            rate = args.images / (time.perf_counter() - started)
        later = np.mean(seconds[1:]) if len(seconds) > 1 else float("nan")
        print(f"{name:14} {seconds[0]:15.2f} {later:15.2f} {rate:16.0f}")


if __name__ == "__main__":
    main()
