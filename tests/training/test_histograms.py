"""train.histograms: weight, gradient and activation summaries in the TensorBoard event files."""

import glob
import re

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from conftest import run_job


def test_histograms_reach_the_event_files(tmp_path, blob_npz):
    run_job(tmp_path, "name=h", "data.format=npz", f"data.train={blob_npz}", "model.name=tiny_cnn",
            "train.epochs=2", "train.histograms=true", "output.report=false")
    files = glob.glob(str(tmp_path / "h" / "tensorboard" / "histograms" / "events.out.tfevents.*"))
    assert len(files) == 1
    events = EventAccumulator(files[0], size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()["tensors"]
    kinds = {tag.split("/")[0] for tag in tags}
    assert kinds == {"weights", "gradients", "activations"}
    found = {}
    # layer names carry a process-wide counter (conv2d_3) when several models were built
    for key, pattern in (("conv kernel", r"weights/conv2d(_\d+)?/kernel"),
                         ("dense gradient", r"gradients/dense(_\d+)?/kernel"),
                         ("dense kernel", r"weights/dense(_\d+)?/kernel"),
                         ("conv output", r"activations/tiny_cnn(_\d+)?/conv2d(_\d+)?"),
                         ("conv zeros", r"activations/tiny_cnn(_\d+)?/conv2d(_\d+)?/zero_fraction"),
                         ("softmax mean", r"activations/probabilities/mean")):
        matches = [t for t in tags if re.fullmatch(pattern, t)]
        assert len(matches) == 1, (pattern, sorted(tags))
        found[key] = matches[0]
        assert [e.step for e in events.Tensors(matches[0])] == [1, 2]  # every epoch
    # a histogram holds real buckets; the weights moved between epochs; ReLU zeros are counted
    first, second = (make_ndarray(e.tensor_proto) for e in events.Tensors(found["dense kernel"]))
    assert first.ndim == 2 and first.shape[1] == 3 and first.shape[0] > 1  # (bucket, [left, right, count])
    assert first[:, 2].sum() == second[:, 2].sum() > 0 and not (first == second).all()
    zeros = [float(make_ndarray(e.tensor_proto)) for e in events.Tensors(found["conv zeros"])]
    assert all(0.0 < z < 1.0 for z in zeros)
    # the default run writes none of this
    run_job(tmp_path, "name=plain", "data.format=npz", f"data.train={blob_npz}",
            "model.name=tiny_cnn", "train.epochs=1", "output.report=false")
    assert not glob.glob(str(tmp_path / "plain" / "tensorboard" / "histograms"))


DEAD_NET = (
    "from trainer.kerasflavor import keras\n"
    "L = keras.layers\n"
    "def dead(input_shape, num_outputs):\n"
    "    return keras.Sequential([keras.Input(input_shape),\n"
    "        L.Conv2D(4, 3, padding='same', activation='relu', name='conv'), L.MaxPooling2D(2),\n"
    "        L.Flatten(), L.Dense(64, activation='relu', name='wide'),\n"
    "        L.Dense(8, activation='relu', name='dead',\n"
    "                bias_initializer=keras.initializers.Constant(-1000.0)),\n"
    "        L.Dense(num_outputs, name='head')], name='deadnet')\n")


def test_histograms_become_plots_a_gif_and_report_sections(tmp_path, blob_npz, monkeypatch):
    """Seed 003's TODO list: per-layer curves, histograms of every epoch, a GIF with one frame
    per epoch and the architecture as a PNG, in plots/ and in the report; a layer of dead ReLU
    units (a bias no input can overcome) shows a zero fraction of 1."""
    import csv

    import numpy as np
    from PIL import Image

    (tmp_path / "dead_nets.py").write_text(DEAD_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    epochs = 3
    run_job(tmp_path, "name=d", "data.format=npz", f"data.train={blob_npz}",
            "model.name=dead_nets:dead", f"train.epochs={epochs}", "train.histograms=true",
            "train.early_stopping_patience=0")
    plots = tmp_path / "d" / "plots"
    for name in ("layer_dynamics.png", "histograms.png", "histograms.gif", "architecture.png",
                 "layer_dynamics.csv"):
        assert (plots / name).stat().st_size > 1000, name
    for name in ("layer_dynamics.png", "histograms.png", "architecture.png"):
        assert Image.open(plots / name).format == "PNG"
    gif = Image.open(plots / "histograms.gif")
    assert gif.format == "GIF" and gif.n_frames == epochs and gif.is_animated
    rows = list(csv.DictReader(open(plots / "layer_dynamics.csv")))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    assert {"standardize", "deadnet/conv", "deadnet/wide", "deadnet/dead", "deadnet/head",
            "probabilities"} <= set(layers)
    for layer in layers:  # one point per epoch per layer
        assert [int(r["epoch"]) for r in rows if r["layer"] == layer] == list(range(1, epochs + 1))
    by = {(r["layer"], int(r["epoch"])): r for r in rows}
    for epoch in range(1, epochs + 1):
        assert float(by["deadnet/dead", epoch]["zero_fraction"]) == 1.0
        assert float(by["deadnet/dead", epoch]["gradient_norm"]) == 0.0  # nothing flows back
        assert 0.0 < float(by["deadnet/conv", epoch]["zero_fraction"]) < 0.9
        assert float(by["deadnet/wide", epoch]["weight_norm"]) > 0
        assert float(by["deadnet/conv", epoch]["weight_norm"]) > 0
    assert by["deadnet/head", 1]["weight_norm"] != by["deadnet/head", epochs]["weight_norm"]
    html = (tmp_path / "d" / "report.html").read_text()
    assert '<section id="dynamics">' in html and "data:image/gif;base64," in html
    for name in ("plots/layer_dynamics.png", "plots/histograms.png", "plots/histograms.gif",
                 "plots/architecture.png"):
        assert name in html, name


def test_what_the_plots_keep_is_bounded_whatever_the_model_size(tmp_path):
    """A fixed sample per layer, kind and epoch (the same positions every epoch), not every
    weight of every epoch."""
    import numpy as np

    from trainer.callbacks.histograms import SAMPLE, HistogramLogger
    from trainer.kerasflavor import keras

    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(500, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 40)).astype(np.float32)
    logger = HistogramLogger(str(tmp_path / "tb"), x, np.zeros((64, 3), np.float32))
    logger.set_model(model)
    for epoch in range(3):
        for w in model.layers[0].weights:  # every weight of the layer moves by 0.01
            w.assign_add(np.full(w.shape, 0.01, np.float32))
        logger.on_epoch_end(epoch)
    d = logger.dynamics
    assert d.epochs == [1, 2, 3] and len(d.layers) == 2
    assert {kind for kind, _ in d.samples} == {"weights", "gradients", "activations"}
    for (kind, layer), rows in d.samples.items():
        assert len(rows) == 3 and all(len(r) <= SAMPLE for r in rows), (kind, layer)
    first = d.layers[0]
    # 20,500 weights and 32,000 outputs, SAMPLE of each kept, at the same positions each epoch
    w = d.samples["weights", first]
    assert len(w[0]) == SAMPLE and np.allclose(w[1] - w[0], 0.01, atol=1e-6)
    assert len(d.samples["activations", first][0]) == SAMPLE
    assert all(len(v) == 3 for v in (*d.weight_norm.values(), *d.zero_fraction.values()))
