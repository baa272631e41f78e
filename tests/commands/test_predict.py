"""Predictions from a saved model alone: seed 004's round trip, shards, batching, remote models."""

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import scipy.io
from PIL import Image

from trainer import convert, predict
from trainer.predict import command as predict_command
from trainer.data import demo
from trainer.errors import UserError
from trainer.outputs import modelfile

from conftest import ROOT, blob_images, contact_frames, error_line, run_cli, run_job, write_npz, write_video


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict")
    run_job(out, "name=shapes", "model.name=tiny_cnn", "data.samples_per_class=150",
            "train.epochs=6", "train.learning_rate=0.003", "output.report=false")
    x, _, target = blob_images(200, seed=5)
    path = write_npz(out / "d", "reg.npz", x, target)
    run_job(out, "name=reg", "task=regression", "data.format=npz", f"data.train={path}",
            "model.name=tiny_cnn", "train.epochs=2", "output.report=false")
    return out


def test_round_trip_new_shape_images_on_the_command_line(models, tmp_path):
    """Seed 004: draw new shapes, save them as PNG, classify them with nothing but model.h5."""
    rng = np.random.default_rng(2024)
    folder = tmp_path / "new"
    folder.mkdir()
    for i, shape in enumerate(demo.CLASSES * 2):
        Image.fromarray(demo.create_image(rng, (32, 32), shape)).save(folder / f"{i}_{shape}.png")
    (folder / "notes.txt").write_text("not an image")  # ignored inside a folder
    out_csv = tmp_path / "pred.csv"
    proc = run_cli("--model", str(models / "shapes" / "model.h5"), str(folder), "--csv", str(out_csv),
                   module="trainer.predict")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6
    for line in lines:
        path, label, prob = line.split("  ")
        assert path.endswith(".png") and label == path[:-4].split("_")[-1], line
        assert 0.5 < float(prob) <= 1.0
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["input"] for r in rows] == [line.split("  ")[0] for line in lines]
    assert list(rows[0]) == ["input", "predicted", "probability", "p_circle", "p_square", "p_triangle"]
    for r in rows:
        assert sum(float(r[f"p_{c}"]) for c in demo.CLASSES) == pytest.approx(1.0, abs=1e-4)
    assert "6 inputs predicted" in proc.stderr


def test_shards_are_streamed_in_batches(models, tmp_path):
    x, y = demo.generate(25, (32, 32), seed=77)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    np.save(tmp_path / "x0.npy", x[:10])
    np.save(tmp_path / "y0.npy", y[:10].astype("U8"))  # a label file beside it is not an input
    np.save(tmp_path / "one.npy", x[0])  # a single image in a file
    saved = predict.load(str(models / "shapes"))  # a run directory names its model
    rows = list(predict.predict(saved, [str(tmp_path)], batch_size=7))
    names = [r.name for r in rows]
    assert len(rows) == 75 + 10 + 1
    assert names[0] == f"{tmp_path / 'one.npy'}[0]" and f"{tmp_path / 's.npz'}[74]" in names
    assert not any("y0.npy" in n for n in names)
    shard = [r for r in rows if "s.npz" in r.name]
    accuracy = np.mean([r.values[0] == label for r, label in zip(shard, y)])
    assert accuracy >= 0.9


def test_regression_values_and_a_model_from_a_bucket(models, tmp_path, gcs):
    url = gcs.url("predict/reg/model.h5")
    gcs.client().bucket(gcs.bucket).blob("predict/reg/model.h5").upload_from_filename(
        str(models / "reg" / "model.h5"))
    saved = predict.load(url)  # remote: fetched, then loaded
    x, _, target = blob_images(20, seed=9)
    path = write_npz(tmp_path, "x.npz", x, target)
    rows = list(predict.predict(saved, [path], batch_size=7))
    assert saved.columns == ["input", "target_0", "target_1"]  # the names it was trained with
    assert [r.name for r in rows] == [f"{path}[{i}]" for i in range(20)]
    # the values are the model's own output on the same images (standardisation included)
    model, meta = modelfile.load(str(models / "reg" / "model.h5"))
    assert meta["task"] == "regression"
    expected = model.predict(x[..., np.newaxis], verbose=0)
    got = np.array([r.values for r in rows], dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert predict.format_row(rows[0], False) == f"{path}[0]  {expected[0][0]:.6g}  {expected[0][1]:.6g}"


def test_a_regression_models_frames_in_the_mat_are_rows_of_its_outputs(models, tmp_path, capsys):
    x, _, _ = blob_images(6, seed=12)
    frames = np.repeat((np.clip(x, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    path = write_video(tmp_path / "v.mp4", frames)
    assert predict_command.main(["--model", str(models / "reg"), path, "--csv", str(tmp_path / "p.csv"),
                         "--mat", str(tmp_path / "p.mat")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(rows[0]) == ["input", "frame", "target_0", "target_1"]
    outputs = [[float(r["target_0"]), float(r["target_1"])] for r in rows]
    assert scipy.io.loadmat(tmp_path / "p.mat")["v"].tolist() == outputs  # one row per frame
    assert capsys.readouterr().err.strip() == (
        f"6 frames of 1 video predicted, written to {tmp_path / 'p.csv'} and {tmp_path / 'p.mat'}")


@pytest.mark.parametrize("make, message", [
    (lambda d: np.save(d / "x.npy", np.zeros((3, 20, 20, 3))), "images of shape (20, 20, 3)"),
    (lambda d: (d / "x.png").write_bytes(b"not a png"), "cannot decode image (not a"),
    (lambda d: (d / "x.csv").write_text("a,b"), "no images, videos or shards, input="),
])
def test_bad_inputs_name_the_file(models, tmp_path, make, message):
    make(tmp_path)
    target = next(p for p in tmp_path.iterdir())
    saved = predict.load(str(models / "shapes" / "model.h5"))
    with pytest.raises(UserError) as exc:
        list(predict.predict(saved, [str(target)]))
    assert message in str(exc.value) and str(target) in str(exc.value)


def test_images_of_another_size_are_resized(models, tmp_path):
    Image.fromarray(demo.create_image(np.random.default_rng(1), (64, 48), "circle")).save(tmp_path / "c.png")
    image = predict.read_image(str(tmp_path / "c.png"), (32, 32, 3))
    assert image.shape == (32, 32, 3) and image.dtype == np.float32 and image.max() == 255


def test_image_files_for_a_model_of_channels_no_image_decodes_to(tmp_path):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    with pytest.raises(UserError) as exc:
        predict.read_image(str(tmp_path / "rgba.png"), (8, 8, 4))
    assert str(exc.value) == (f"model takes 4-channel images, {tmp_path / 'rgba.png'}, expected a "
                              "model of 1 or 3 channels for image files and videos (use .npy/.npz shards)")


def test_missing_model_on_the_command_line(tmp_path):
    proc = run_cli("--model", str(tmp_path / "nope.h5"), str(tmp_path), module="trainer.predict")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: file not found, --model={tmp_path / 'nope.h5'}, expected a model.h5 written by "
        "trainer.task")
    assert not os.path.exists(tmp_path / "pred.csv")


# ----------------------------------------------------------------------------------------------
# Prediction decodes an image file exactly as training did.


def _sixteen_bit_folder(root, n: int = 20) -> list[str]:
    """Classes 'dim' (about 1000) and 'bright' (about 3000) as 16-bit greyscale PNG and TIFF of
    two sizes: every pixel is above 255, so a decoder that narrows to 8 bits sees one class."""
    rng = np.random.default_rng(16)
    files = []
    for cls, level in (("dim", 1000), ("bright", 3000)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = ((10, 12), (8, 8))[i % 2]
            img = Image.fromarray((level + rng.integers(-300, 300, shape)).astype(np.uint16))
            files.append(str(root / cls / f"{i:02d}.{('png', 'tif')[i // 2 % 2]}"))
            img.save(files[-1])
    return files


def test_a_model_trained_on_16_bit_images_predicts_its_training_files_as_well(tmp_path):
    from trainer.data import load_splits

    _sixteen_bit_folder(tmp_path / "data")
    result, cfg = run_job(tmp_path / "out", "name=deep", "data.format=image_folder",
                          f"data.train={tmp_path / 'data'}", "data.image_size=[8, 8]",
                          "data.color=grey", "model.name=tiny_cnn", "train.epochs=8",
                          "train.learning_rate=0.01", "output.report=false", "output.plots=false")
    splits = load_splits(cfg)
    x = np.concatenate([s.view.array() for s in (splits.train, splits.val, splits.test)])
    y = np.concatenate([s.y for s in (splits.train, splits.val, splits.test)])
    model = predict.load(result.outputs["model"]).model
    trained = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
    assert trained >= 0.9  # what the model does on the images as training decoded them

    proc = run_cli("--model", result.outputs["model"], str(tmp_path / "data"),
                   module="trainer.predict")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("  ") for line in proc.stdout.strip().splitlines()]
    assert len(rows) == 40
    predicted = np.mean([label == os.path.basename(os.path.dirname(path))
                         for path, label, _ in rows])
    assert predicted == trained


@pytest.mark.parametrize("color, size", [("grey", [6, 5]), ("rgb", [6, 5]), ("grey", None)])
def test_an_image_decodes_alike_for_training_and_for_prediction(tmp_path, color, size):
    from trainer.config import DataConfig
    from trainer.data import images, readers

    files = _sixteen_bit_folder(tmp_path, n=4)
    if size:  # colour, palette and 8-bit files too (all of one size when none is asked for)
        rng = np.random.default_rng(3)
        for mode, name in (("RGB", "c.jpg"), ("P", "p.png"), ("L", "l.tiff")):
            pixels = rng.integers(0, 256, (9, 7, 3) if mode == "RGB" else (9, 7), np.uint8)
            Image.fromarray(pixels).convert(mode).save(tmp_path / "dim" / name)
            files.append(str(tmp_path / "dim" / name))
    else:
        files = [f for f in files if Image.open(f).size == (8, 8)]
    config = DataConfig(format="image_folder", image_size=size, color=color)
    shard = readers.read_image_folder(files, config, images.spec_from_config(config))[0]
    trained = shard.read(0, len(files))
    assert trained.max() > 255  # 16-bit values kept
    for path, expected in zip(files, trained):
        np.testing.assert_array_equal(predict.read_image(path, shard.sample_shape), expected,
                                      err_msg=path)


def test_prediction_loads_the_model_file_without_training_report_or_plots(models, tmp_path):
    """The model file is one small module: predicting imports neither training nor outputs."""
    Image.fromarray(demo.create_image(np.random.default_rng(5), (32, 32), "square")).save(
        tmp_path / "s.png")
    script = ("import sys\nfrom trainer import predict\n"
              f"rows = list(predict.predict(predict.load({str(models / 'shapes')!r}), "
              f"[{str(tmp_path / 's.png')!r}]))\n"
              "print(rows[0].values[0])\n"
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('trainer.'))))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    label, modules = proc.stdout.strip().splitlines()[-2:]
    assert label == "square"
    assert "trainer.outputs.modelfile" in modules.split()
    assert not [m for m in modules.split() if m.startswith(
        ("trainer.training", "trainer.callbacks", "trainer.outputs.artifacts",
         "trainer.outputs.report", "trainer.outputs.plots"))], modules


# ----------------------------------------------------------------------------------------------
# Where the predictions go: refused before the model is loaded or anything is printed.


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "out").mkdir() or d / "out", "is a directory"),
    (lambda d: f"{d / 'new'}/", "is a directory"),
    (lambda d: (d / "f.txt").write_text("x") and d / "f.txt" / "p.csv", "Not a directory"),
    (lambda d: "/proc/p.csv", "cannot write there"),
    (lambda d: "/proc/self/new/p.csv", "cannot write there"),
])
def test_a_csv_output_path_that_cannot_be_written(models, tmp_path, capsys, make, message):
    x, _ = demo.generate(2, (32, 32), seed=1)
    np.save(tmp_path / "x.npy", x)
    out = str(make(tmp_path))
    code = predict_command.main(["--model", str(models / "shapes"), str(tmp_path / "x.npy"), "--csv", out])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    line = error_line(captured.err)
    assert line.startswith("error: ") and message in line and f"--csv={out}," in line
    assert line.endswith("expected a file name in a folder this process can write to")


def test_an_output_on_a_bucket_is_probed_before_the_model_loads(models, gcs, tmp_path, capsys):
    """`--csv`/`--mat` on a bucket go through the storage layer's one write probe, as a run's
    folder does: a bucket that cannot take them is one error line before anything is predicted,
    and one that can is left with the predictions alone."""
    x, _ = demo.generate(2, (32, 32), seed=1)
    np.save(tmp_path / "x.npy", x)
    for flag, out in (("csv", "gs://no-such-bucket-for-predictions/p.csv"),
                      ("csv", "gs://no-such-bucket-for-predictions/a/b/p.csv"),
                      ("mat", "gs://no-such-bucket-for-predictions/labels.mat")):
        code = predict_command.main(["--model", str(models / "shapes"), str(tmp_path / "x.npy"),
                                     f"--{flag}", out])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", captured
        line = error_line(captured.err)
        assert line.startswith("error: cannot write there (") and f"--{flag}={out}," in line, line
    out = gcs.url("predict-probe", "p.csv")
    assert predict_command.main(["--model", str(models / "shapes"), str(tmp_path / "x.npy"),
                                 "--csv", out]) == 0
    assert [b.name for b in gcs.client().list_blobs(gcs.bucket, prefix="predict-probe/")] == [
        "predict-probe/p.csv"]


def test_an_edited_model_file_on_the_command_line(models, tmp_path):
    import json
    import shutil

    import h5py

    path = tmp_path / "model.h5"
    shutil.copy(models / "shapes" / "model.h5", path)
    with h5py.File(path, "a") as f:
        meta = json.loads(f.attrs[modelfile.METADATA_ATTR])
        f.attrs[modelfile.METADATA_ATTR] = json.dumps(dict(meta, class_names=["a", "b"]))
    x, _ = demo.generate(2, (32, 32), seed=1)
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("--model", str(path), str(tmp_path / "x.npy"), "--csv", str(tmp_path / "p.csv"),
                   module="trainer.predict")
    assert proc.returncode == 2 and proc.stdout == "" and not (tmp_path / "p.csv").exists()
    assert error_line(proc.stderr) == (
        f"error: model metadata 'class_names' is ['a', 'b'], {path}, expected a list of 3 names, "
        "one per output of the model")


# ----------------------------------------------------------------------------------------------
# Seed 001's curation: new videos, frame by frame, to CSV and to the .mat that convert reads.


@pytest.fixture(scope="module")
def contact_run(tmp_path_factory):
    """Videos (MP4 and AVI) with .mat labels -> convert -> a trained model of their frames."""
    root = tmp_path_factory.mktemp("contact")
    argv = ["--out", str(root / "shards"), "--to", "npz", "--set", "data.color=grey"]
    videos = []
    for k, name in enumerate(("day1.mp4", "day2.avi", "day3.mp4")):
        frames, touch = contact_frames(60, seed=10 + k)
        videos.append(write_video(root / name, frames))
        scipy.io.savemat(root / f"day{k + 1}.mat", {"contacts": touch[:, None].astype(float)})
        argv += ["--video", videos[-1], "--labels", str(root / f"day{k + 1}.mat")]
    assert convert.main(argv) == 0
    result, _ = run_job(root / "runs", "name=contact", "data.format=npz",
                        f"data.train={root / 'shards'}/train-*.npz", "model.name=tiny_cnn",
                        "train.epochs=8", "train.learning_rate=0.003", "output.report=false",
                        "output.plots=false")
    return root, videos, result


def test_new_videos_are_curated_frame_by_frame_into_csv_and_mat(contact_run, tmp_path, capsys):
    """convert -> train -> predict new videos -> the .mat loads back and converts again."""
    _, _, result = contact_run
    new, truth = [], []
    for name, n, seed in (("session 1.mp4", 40, 50), ("session-2.avi", 30, 51)):
        frames, touch = contact_frames(n, seed=seed)
        new.append(write_video(tmp_path / name, frames))
        truth.extend(touch)
    out_csv, out_mat = tmp_path / "curated" / "frames.csv", tmp_path / "curated" / "labels.mat"
    assert predict_command.main(["--model", result.run_dir, *new, "--csv", str(out_csv), "--mat",
                         str(out_mat), "--progress_every", "16", "--batch_size", "8"]) == 0
    stdout, stderr = capsys.readouterr()
    rows = list(csv.DictReader(open(out_csv)))
    assert list(rows[0]) == ["input", "frame", "predicted", "probability", "p_0", "p_1"]
    assert [(r["input"], int(r["frame"])) for r in rows] == (
        [(new[0], i) for i in range(40)] + [(new[1], i) for i in range(30)])
    predicted = [int(r["predicted"]) for r in rows]
    assert np.mean(np.array(predicted) == truth) >= 0.9
    assert stdout.splitlines()[17] == f"{new[0]}[17]  {rows[17]['predicted']}  {float(rows[17]['probability']):.4f}"
    assert len(stdout.splitlines()) == 70
    *progress, summary = stderr.splitlines()
    assert [re.fullmatch(r"progress: (.+) frame (\d+) of (\d+) \(\d+ frames/s\)", line).groups()
            for line in progress] == [(new[0], "16", "40"), (new[0], "32", "40"), (new[1], "16", "30")]
    assert summary == f"70 frames of 2 videos predicted, written to {out_csv} and {out_mat}"

    mat = scipy.io.loadmat(out_mat)  # what MATLAB's load(...) gives: one double vector per video
    assert sorted(k for k in mat if not k.startswith("__")) == ["session_1", "session_2"]
    assert mat["session_1"].shape == (40, 1) and mat["session_1"].dtype == np.float64
    assert list(mat["session_1"][:, 0]) + list(mat["session_2"][:, 0]) == predicted

    # Corrected or not, the curated labels go straight back into training data.
    assert convert.main(["--video", new[0], "--video", new[1], "--labels", str(out_mat),
                         "--out", str(tmp_path / "shards"), "--to", "npz"]) == 0
    with np.load(tmp_path / "shards" / "train-00000.npz") as shard:
        assert list(shard["y"]) == predicted and list(shard["group"]) == [new[0]] * 40 + [new[1]] * 30


def test_prediction_decodes_frames_as_convert_did_for_training(contact_run):
    root, videos, result = contact_run
    with np.load(root / "shards" / "train-00000.npz") as shard:
        trained = shard["x"][shard["group"] == videos[1]]
    frames = np.stack(list(predict.read_video(videos[1], predict.load(result.run_dir).input_shape)))
    assert frames.shape == trained.shape == (60, 32, 32, 1)
    np.testing.assert_array_equal(frames, trained)


def test_a_long_video_costs_one_batch_of_frames(contact_run, tmp_path):
    """10x the frames (160 -> 1,600, 6.5 MB as float32) must not raise the peak by more than a
    batch or two (TensorFlow's own caches grow a little with the calls)."""
    _, _, result = contact_run
    saved = predict.load(result.run_dir)
    frames, _ = contact_frames(32, seed=3)
    paths = {n: write_video(tmp_path / f"long{n}.mp4", np.tile(frames, (n // 32, 1, 1, 1)))
             for n in (160, 1600)}  # whole batches: a last, smaller one would be traced anew
    list(predict.predict(saved, [paths[160]], batch_size=16))  # the model's first call traced
    peaks = {}
    for n, path in paths.items():
        tracemalloc.start()
        assert sum(1 for _ in predict.predict(saved, [path], batch_size=16)) == n
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"predict peak traced memory: {peaks}")
    video_bytes = 1600 * 32 * 32 * 4
    assert peaks[1600] - peaks[160] < video_bytes / 20 and peaks[1600] < video_bytes / 10, peaks


def test_bad_video_inputs_are_one_line_and_write_nothing(contact_run, tmp_path, capsys):
    _, videos, result = contact_run
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "frame.png")
    (tmp_path / "old.mat").write_bytes(b"the labels of an earlier run")
    out = ["--csv", str(tmp_path / "p.csv"), "--mat", str(tmp_path / "old.mat")]
    cases = [
        ([str(tmp_path / "gone.mp4"), *out],
         f"error: no files found, input={tmp_path / 'gone.mp4'}, expected an existing path or glob"),
        ([videos[0], str(tmp_path / "broken.mp4"), *out], "error: cannot decode video ("),
        ([str(tmp_path / "frame.png"), *out],
         f"error: no videos among the inputs, --mat={tmp_path / 'old.mat'}, expected video files "
         "(.mp4, .avi, .mov, .mkv, .m4v, .mpg, .mpeg, .wmv) to write per-frame labels for"),
        ([videos[0], "--mat", str(tmp_path)], f"error: path is a directory, --mat={tmp_path}, "
         "expected a file name in a folder this process can write to"),
        ([videos[0], "--out", str(tmp_path / "curated"), *out],
         f"error: --csv and --mat with --out={tmp_path / 'curated'}, command line, expected either "
         "--out FOLDER (results per input) or --csv/--mat (one file for all)"),
    ]
    for args, expected in cases:
        assert predict_command.main(["--model", result.run_dir, *args]) == 2
        assert error_line(capsys.readouterr().err).startswith(expected)
    assert (tmp_path / "old.mat").read_bytes() == b"the labels of an earlier run"
    assert not (tmp_path / "p.csv").exists()
    assert sorted(os.listdir(tmp_path)) == ["broken.mp4", "frame.png", "old.mat"]


# ----------------------------------------------------------------------------------------------
# Batch curation (`--out`): replicas share the inputs, a restarted one skips what is done.


def _cluster_spec(index: int) -> str:
    """What Vertex AI tells replica `index` of a two-replica job (pool 0, then pool 1)."""
    return json.dumps({"cluster": {"workerpool0": ["w0:2222"], "workerpool1": ["w1:2222"]},
                       "environment": "cloud",
                       "task": {"type": f"workerpool{index}", "index": 0}})


def _replica_args(model: str, inputs: str, out: str) -> list[str]:
    return ["--model", model, "--out", out, "--batch_size", "16", "--poll_seconds", "0.2", inputs]


def _start_replica(index: int, model: str, inputs: str, out: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CLUSTER_SPEC=_cluster_spec(index))
    return subprocess.Popen([sys.executable, "-m", "trainer.predict",
                             *_replica_args(model, inputs, out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_replicas_one_killed_and_restarted_curate_every_input_once(contact_run, gcs, tmp_path,
                                                                      monkeypatch, capsys):
    _, _, result = contact_run
    bucket = gcs.client().bucket(gcs.bucket)
    bucket.blob("curate/model.h5").upload_from_filename(os.path.join(result.run_dir, "model.h5"))
    # Sorted, replica 0 takes c0, c2 and img/p0; replica 1 takes c1, c3_long and img/p1.
    frames, _ = contact_frames(24, seed=60)
    for name, n in (("c0.mp4", 24), ("c1.avi", 24), ("c2.mp4", 24), ("c3_long.mp4", 720)):
        write_video(tmp_path / name, np.tile(frames, (n // 24, 1, 1, 1)))
        bucket.blob(f"curate/in/{name}").upload_from_filename(str(tmp_path / name))
    for k in range(2):
        Image.fromarray(frames[k, :, :, 0]).save(tmp_path / f"p{k}.png")
        bucket.blob(f"curate/in/img/p{k}.png").upload_from_filename(str(tmp_path / f"p{k}.png"))
    model, inputs = gcs.url("curate/model.h5"), gcs.url("curate/in")

    assert predict_command.main(["--model", model, "--out", gcs.url("curate/one"), inputs]) == 0
    capsys.readouterr()

    def results(prefix):
        return sorted(b.name.removeprefix(prefix) for b in bucket.list_blobs(prefix=prefix))

    out = gcs.url("curate/two")
    chief, worker = (_start_replica(i, model, inputs, out) for i in (0, 1))
    deadline = time.monotonic() + 240
    while "c1.avi.csv" not in results("curate/two/"):  # replica 1's first input is done
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.05)
    worker.kill()  # midway: the long video is being predicted
    worker.wait()
    assert "c3_long.mp4.csv" not in results("curate/two/")
    assert chief.poll() is None  # replica 0 waits for every result: it ends the job
    monkeypatch.setenv("CLUSTER_SPEC", _cluster_spec(1))  # restarted (here, in this process)
    assert predict_command.main(_replica_args(model, inputs, out)) == 0
    w_out, w_err = capsys.readouterr()
    c_out, c_err = chief.communicate(timeout=240)
    assert chief.returncode == 0, c_err[-2000:]
    assert f"{inputs}/c1.avi: results exist, skipped" in w_out
    assert f"{inputs}/c3_long.mp4: 720 frames -> {out}/c3_long.mp4.csv and {out}/c3_long.mp4.mat" in w_out
    assert "waiting for the other replicas" in c_out
    assert "replica 1 of 2: 2 inputs predicted (720 video frames), 1 skipped" in w_err

    # Exactly one complete result per input, equal to the single-machine run's.
    names = results("curate/two/")
    assert names == results("curate/one/") == sorted(
        [f"{n}.csv" for n in ("c0.mp4", "c1.avi", "c2.mp4", "c3_long.mp4", "img/p0.png", "img/p1.png")]
        + [f"{n}.mat" for n in ("c0.mp4", "c1.avi", "c2.mp4", "c3_long.mp4")])
    for name in names:
        one, two = (bucket.blob(f"curate/{run}/{name}").download_as_bytes() for run in ("one", "two"))
        if name.endswith(".csv"):  # the same rows; probabilities equal up to float noise (the
            # replicas run in other processes, with another batch size, so the last bits may differ)
            a, b = (list(csv.reader(io.StringIO(data.decode()))) for data in (one, two))
            assert len(a) == len(b) and a[0] == b[0], name
            for row_a, row_b in zip(a[1:], b[1:]):
                assert len(row_a) == len(row_b), name
                for x, y in zip(row_a, row_b):
                    assert x == y or abs(float(x) - float(y)) <= 1e-6, (name, row_a, row_b)
        else:  # a .mat's header has the time it was written
            a, b = (scipy.io.loadmat(io.BytesIO(data)) for data in (one, two))
            (key,) = [k for k in a if not k.startswith("__")]
            assert key == name.split(".")[0] and np.array_equal(a[key], b[key]), name
    rows = list(csv.reader(io.StringIO(bucket.blob("curate/two/c3_long.mp4.csv").download_as_text())))
    assert rows[0][:2] == ["input", "frame"] and len(rows) == 721
