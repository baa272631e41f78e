"""`saved_model/`: the TF-op decoder against the one decoder, and the exported model, loaded in a
fresh process that does not import this package, against `trainer.predict` on the same files."""

import base64
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trainer import predict
from trainer.data import images

from conftest import blob_images, run_job, write_npz

RNG = np.random.default_rng(17)


def _smooth(height, width, channels, top):
    """A smooth picture with noise: every resize weight matters, nothing is flat."""
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [(np.sin(xx / 3 + k) + np.cos(yy / 4 - k)) * 0.25 + 0.5 for k in range(channels)]
    pixels = np.stack(planes, -1) + RNG.normal(0, 0.05, (height, width, channels))
    return np.clip(pixels * top, 0, top)


def _encode(pixels, fmt="PNG", mode=None):
    image = Image.fromarray(pixels)
    image = image.convert(mode) if mode else image
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _png_16_bit_rgb(pixels):
    """Pillow reads 16-bit colour PNG but cannot write it; written here, chunk by chunk."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


GREY8 = _smooth(23, 17, 1, 255).astype(np.uint8)[..., 0]
RGB8 = _smooth(23, 17, 3, 255).astype(np.uint8)
FILES = {
    "png 8-bit grey": _encode(GREY8),
    "png 8-bit rgb": _encode(RGB8),
    "png 8-bit palette": _encode(RGB8, mode="P"),
    "png 8-bit rgba": _encode(np.dstack([RGB8, GREY8])),
    "png 16-bit grey": _encode(_smooth(23, 17, 1, 65535).astype(np.uint16)[..., 0]),
    "png 16-bit rgb": _png_16_bit_rgb(_smooth(23, 17, 3, 65535).astype(np.uint16)),
    "jpeg grey": _encode(GREY8, "JPEG"),
    "jpeg rgb": _encode(RGB8, "JPEG"),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_tf_op_decoder_gives_the_decoders_values(name):
    """Same size: bit for bit. Resized: Pillow's bilinear filter in its own coefficients, so
    16-bit values agree to float32 rounding and 8-bit ones to the last grey level."""
    from trainer.data import tf_images

    data, sixteen = FILES[name], name.startswith("png 16-bit grey")
    for size in [(23, 17), (8, 8), (31, 40), (12, 30)]:
        for channels in (1, 3):
            expected = images.decode(data, images.ImageSpec(size, channels), name)
            got = tf_images.decode(data, *size, channels).numpy()
            assert got.shape == expected.shape and got.dtype == np.float32
            if size == (23, 17):
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} {channels}")
            elif sixteen:
                np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0.05)
            else:
                assert np.abs(got - expected).max() <= 1, (name, size, channels)


# ----------------------------------------------------------------------------------------------
# The exported model, served without this package.

FRESH_PROCESS = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf

answers = []
for folder, request_path, arrays_path in json.loads(sys.argv[1]):
    served = tf.saved_model.load(folder)
    # A Vertex AI request as the prediction container gets it; TF Serving decodes {"b64": ...}.
    instances = json.load(open(request_path))["instances"]
    image_bytes = tf.constant([base64.b64decode(i["image_bytes"]["b64"]) for i in instances])
    outputs = served.signatures["serving_default"](image_bytes=image_bytes)
    arrays = served.signatures["predict_arrays"](images=tf.constant(np.load(arrays_path)))
    answers.append({"bytes": {k: v.numpy().tolist() for k, v in outputs.items()},
                    "arrays": {k: v.numpy().tolist() for k, v in arrays.items()}})
print(json.dumps({"answers": answers,
                  "imported_trainer": any(m.split(".")[0] == "trainer" for m in sys.modules)},
                 default=bytes.decode))  # class names are strings: bytes in TensorFlow
"""


def _inputs(folder, height, width):
    """PNG 8 and 16 bit, JPEG, grey and colour. The 8-bit ones are of the model's size (resized,
    they may differ by a grey level: see the decoder test above); the 16-bit one is resized."""
    folder.mkdir()
    grey, rgb = (_smooth(height, width, c, 255).astype(np.uint8) for c in (1, 3))
    made = {"grey8.png": _encode(grey[..., 0]), "rgb8.png": _encode(rgb),
            "rgb16.png": _png_16_bit_rgb(_smooth(height, width, 3, 65535).astype(np.uint16)),
            "grey16.png": _encode(_smooth(9, 13, 1, 4000).astype(np.uint16)[..., 0]),
            "rgb.jpg": _encode(rgb, "JPEG"), "grey.jpg": _encode(grey[..., 0], "JPEG")}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in sorted(made)]


def _grey_classifier(root):
    """Classes 'dim' and 'bright' as 16-bit greyscale PNG, trained at 8x8."""
    rng = np.random.default_rng(16)
    for cls, level in (("dim", 1000), ("bright", 3000)):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(16):
            pixels = (level + rng.integers(-300, 300, (10, 12))).astype(np.uint16)
            Image.fromarray(pixels).save(root / "data" / cls / f"{i:02d}.png")
    result, _ = run_job(root / "runs", "name=grey", "data.format=image_folder",
                        f"data.train={root / 'data'}", "data.image_size=[8, 8]",
                        "data.color=grey", "model.name=tiny_cnn", "train.epochs=2",
                        "output.report=false", "output.plots=false", "output.saved_model=true")
    return result


def _rgb_regression(root):
    """Two targets named in a CSV manifest ('x centre' and 'y') of 8-bit RGB PNG files."""
    x, _, target = blob_images(60, size=10, seed=4)
    (root / "imgs").mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "x centre", "y"])
        for i in range(60):
            pixels = np.clip(np.repeat(x[i][..., None], 3, -1) * 120 + 60, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "imgs" / f"{i}.png")
            writer.writerow([f"imgs/{i}.png", target[i, 0], target[i, 1]])
    result, _ = run_job(root / "runs", "name=reg", "task=regression", "data.format=csv",
                        f"data.train={root / 'labels.csv'}", "data.path_column=file",
                        "data.label_columns=['x centre', 'y']", "data.color=rgb",
                        "model.name=tiny_cnn", "train.epochs=2", "output.report=false",
                        "output.plots=false", "output.saved_model=true")
    return result


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both models, predicted by `trainer.predict` here and served from image bytes (and arrays)
    by their exports in one new interpreter without this package on its path."""
    root = tmp_path_factory.mktemp("serving")
    cases, jobs = {}, []
    for name, train, size in (("grey", _grey_classifier, (8, 8)),
                              ("reg", _rgb_regression, (10, 10))):
        result = train(root / name)
        files = _inputs(root / name / "new", *size)
        saved = predict.load(result.outputs["model"])
        request = {"instances": [{"image_bytes": {"b64": base64.b64encode(open(f, "rb").read())
                                                  .decode()}} for f in files]}
        (root / name / "request.json").write_text(json.dumps(request))
        np.save(root / name / "arrays.npy",
                np.stack([predict.read_image(f, saved.input_shape) for f in files]))
        jobs.append([result.outputs["saved_model"], str(root / name / "request.json"),
                     str(root / name / "arrays.npy")])
        cases[name] = (result, list(predict.predict(saved, files)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(jobs)], cwd=root,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported_trainer"] is False
    return {name: (*cases[name], answer) for name, answer in zip(cases, out["answers"])}


def test_a_grey_classifier_served_from_image_bytes_matches_trainer_predict(served):
    result, rows, answer = served["grey"]
    exported = os.path.join(result.run_dir, "saved_model")
    assert result.outputs["saved_model"] == exported
    info = json.load(open(os.path.join(exported, "assets.extra", "trainer.json")))
    assert info["tensorflow"] and info["class_names"] == ["bright", "dim"]
    expected = np.array([row.values[2:] for row in rows])
    for way in ("bytes", "arrays"):
        out = answer[way]
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6, err_msg=way)
        assert out["predicted"] == [row.values[0] for row in rows], way
        np.testing.assert_allclose(out["probability"], [row.values[1] for row in rows], atol=1e-6)
        assert out["classes"] == [["bright", "dim"]] * len(rows)


def test_an_rgb_regression_served_with_its_named_targets(served):
    _, rows, answer = served["reg"]
    expected = np.array([row.values for row in rows])
    for way in ("bytes", "arrays"):
        assert sorted(answer[way]) == ["x_centre", "y"]
        got = np.stack([answer[way]["x_centre"], answer[way]["y"]], axis=1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=way)


def test_a_model_that_cannot_be_served_is_skipped_with_one_line(tmp_path, caplog):
    """Two-channel arrays are no image: the run ends as always, with its model.h5, and says why
    there is no saved_model/."""
    x, label, _ = blob_images(60, size=8, channels=2)
    path = write_npz(tmp_path / "d", "two.npz", x, label)
    caplog.set_level("INFO", logger="trainer")
    result, _ = run_job(tmp_path / "runs", "name=two", "data.format=npz", f"data.train={path}",
                        "data.channels=last",
                        "model.name=tiny_cnn", "train.epochs=1", "output.report=false",
                        "output.plots=false", "output.saved_model=true")
    assert "saved_model" not in result.outputs and os.path.isfile(result.outputs["model"])
    assert not os.path.exists(tmp_path / "runs" / "two" / "saved_model")
    (line,) = [r.getMessage() for r in caplog.records if "saved_model/" in r.getMessage()]
    assert line == ("saved_model/ not written (model.h5 is): the model takes inputs of shape "
                    "(8, 8, 2); image files decode to (H, W, 1) or (H, W, 3)")


def test_a_layer_that_does_not_trace_leaves_no_folder_and_a_reason(tmp_path):
    """A user's layer written for eager execution only (it calls NumPy on its input)."""
    from trainer.kerasflavor import keras
    from trainer.outputs import servable

    class EagerOnly(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(keras.layers.Flatten()(inputs)) * float(np.asarray(inputs).mean())

    model = EagerOnly()
    model(np.ones((1, 4, 4, 1), np.float32))  # built, eagerly
    reason = servable.export(model, {"task": "regression", "input_shape": [4, 4, 1],
                                     "num_outputs": 2}, str(tmp_path / "sm"))
    assert reason and not os.path.exists(tmp_path / "sm")


@pytest.mark.parametrize("names, keys", [
    (["data.target_names=[spacing, angle]"], ["angle", "spacing"]),
    ([], ["target_0", "target_1"]),
])
def test_served_regression_outputs_are_named_as_metrics_and_predict_name_them(tmp_path, names, keys):
    """One set of target names for the whole run: `data.target_names` (else target_K) names the
    served outputs as it names metrics.json's per-target figures and predict's columns."""
    import tensorflow as tf

    x, _, _ = blob_images(40, size=8)
    targets = np.stack([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1).astype(np.float32)
    path = write_npz(tmp_path / "d", "reg.npz", x, targets)
    result, _ = run_job(tmp_path / "runs", "name=reg", "task=regression", "data.format=npz",
                        f"data.train={path}", "model.name=tiny_cnn", "train.epochs=1",
                        "output.report=false", "output.plots=false", "output.saved_model=true",
                        *names)
    metrics = json.load(open(os.path.join(result.run_dir, "metrics.json")))
    assert sorted(k for k in metrics["per_target"] if k not in ("split", "overall")) == keys
    assert sorted(predict.load(result.run_dir).value_columns) == keys
    served = tf.saved_model.load(os.path.join(result.run_dir, "saved_model"))
    assert sorted(served.signatures["serving_default"].structured_outputs) == keys
