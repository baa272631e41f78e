"""report.html: what it holds, and that a real browser renders it with every image."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from trainer.outputs.report import per_class_scores

from conftest import blob_images, run_job, write_npz

SECTIONS = ("metrics", "curves", "errors", "data", "architecture", "throughput", "environment",
            "config")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A deliberately undertrained shapes classifier (so it makes mistakes) and a regressor."""
    out = tmp_path_factory.mktemp("report")
    run_job(out, "name=cls", "model.name=tiny_cnn", "data.samples_per_class=30", "train.epochs=2")
    x, _, target = blob_images(200, seed=5)
    path = write_npz(out / "d", "reg.npz", x, target)
    run_job(out, "name=reg", "task=regression", "data.format=npz", f"data.train={path}",
            "model.name=tiny_cnn", "train.epochs=2")
    return out


def _html(runs, name):
    return (runs / name / "report.html").read_text()


def test_classification_report_holds_every_section(runs):
    html = _html(runs, "cls")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    metrics = json.loads((runs / "cls" / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    wrong = int(matrix.sum() - np.trace(matrix))
    assert wrong > 0  # the fixture's model is weak on purpose
    assert f"Most confident mistakes ({wrong} of {int(matrix.sum())} test images wrong)" in html
    assert html.count("<figcaption>") == min(wrong, 16)
    assert len(re.findall(r"true: (circle|square|triangle)<br>predicted: ", html)) == min(wrong, 16)
    # each mistake names its source: the shard and the row in it
    assert len(re.findall(r"<small>row \d+ of [^<]+</small></figcaption>", html)) == min(wrong, 16)
    for name in ("circle", "square", "triangle", "macro average"):
        assert f"<td>{name}</td>" in html
    assert "Per-class precision, recall and F1" in html and "Confusion matrix" in html
    assert "tiny_cnn" in html and "Conv2D" in html and "6,371" in html  # the layer table
    assert "train_samples_per_s" in html and "tensorflow" in html and "name: cls" in html
    # self-contained: nothing fetched from anywhere, no script
    assert "<script" not in html and not re.search(r'(src|href)="(https?:|//)', html)


def test_regression_report_has_scatter_and_residuals(runs):
    html = _html(runs, "reg")
    assert "Regression: predictions against truth" in html
    assert 'alt="predicted vs true and residuals"' in html
    assert "<th>RMSE</th>" in html and "<td>target_1</td>" in html and "<th>R²</th>" in html
    assert "Most confident mistakes" not in html and "Confusion matrix" not in html


def test_per_class_scores():
    matrix = np.array([[8, 2], [1, 9]])  # rows: true class
    (p0, r0, f0, n0), (p1, r1, f1, n1) = per_class_scores(matrix)
    assert (p0, r0, n0) == (8 / 9, 0.8, 10) and (p1, r1, n1) == (9 / 11, 0.9, 10)
    assert f0 == pytest.approx(2 * p0 * r0 / (p0 + r0))
    assert per_class_scores(np.array([[0, 0], [3, 0]]))[0][:3] == (0.0, 0.0, 0.0)


_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const ok = images.filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith("data:image/png"));
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-rendered", ok.length);
  document.body.setAttribute("data-height", document.body.scrollHeight);
});
</script>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _chromium(), reason="Chromium is not installed (`apt-get install chromium`; "
                    "`make test` installs it when run as root)")
@pytest.mark.parametrize("name, at_least", [("cls", 5), ("reg", 3)])
def test_report_renders_in_headless_chromium(runs, tmp_path, name, at_least):
    # The probe runs after the load event, when every image has decoded, and writes what it
    # saw into the DOM that --dump-dom prints.
    page = tmp_path / "page.html"
    page.write_text(_html(runs, name).replace("</body>", _PROBE + "</body>"))
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    rendered = int(re.search(r'data-rendered="(\d+)"', body).group(1))
    assert images >= at_least and rendered == images, body
    assert int(re.search(r'data-height="(\d+)"', body).group(1)) > 2000  # a long, laid-out page
    assert os.path.getsize(page) > 50_000


def _has_graphviz():
    import importlib.util

    return importlib.util.find_spec("pydot") is not None and shutil.which("dot") is not None


def test_architecture_diagram_where_plot_model_can_draw(runs):
    """The diagram is in the report and in plots/architecture.png, Graphviz's graph or, without
    `dot`, the layers in order (and the report says which)."""
    from PIL import Image

    html = _html(runs, "cls")
    assert re.search(r'<h3>Diagram \(plots/architecture.png\)</h3><img alt="architecture diagram" '
                     r'src="data:image/png;base64,', html)
    png = Image.open(runs / "cls" / "plots" / "architecture.png")
    assert png.format == "PNG" and png.size[1] > 200
    if not _has_graphviz():
        assert "Drawn without Graphviz (`dot` not found)" in html
        pytest.skip("pydot or Graphviz's dot is missing (pip install pydot; apt-get install graphviz)")
    assert "Drawn without Graphviz" not in html


def test_history_plot_has_whole_epochs_on_its_axis():
    from trainer.outputs import plots

    history = [{"epoch": 1, "loss": 0.9, "val_loss": 1.0}, {"epoch": 2, "loss": 0.5,
                                                            "val_loss": 0.7}]
    fig = plots.history_figure(history, "t")
    ticks = [t for ax in fig.axes for t in ax.get_xticks()
             if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_a_small_metric_keeps_its_digits_where_it_is_printed(capsys):
    from trainer import task
    from trainer.job import RunResult
    from trainer.outputs.table import text_table

    task._report(RunResult("runs/x", {}, {"test": {"loss": 3.2e-05, "mae": 0.00123}}), False)
    out = capsys.readouterr().out
    assert "loss=3.2e-05, mae=0.00123" in out, out
    assert "3.2e-05" in text_table([{"val_loss": 3.2e-05}])  # compare and the search's table


def test_an_image_from_a_file_is_named_by_its_file(tmp_path):
    """The gallery's source line for an image folder: the PNG itself, not a row of the folder."""
    from PIL import Image

    from trainer import config
    from trainer.data import load_splits

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "data" / label)
        for k in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(
                tmp_path / "data" / label / f"{label}{k}.png")
    cfg = config.load(None, ["data.format=image_folder", f"data.train={tmp_path}/data",
                             "data.validation_split=0.25", "data.test_split=0.25"])
    test = load_splits(cfg).test.view
    named = [test.origin(i) for i in range(len(test))]
    assert named and all(os.path.isfile(p) and p.endswith(".png") for p in named), named
    assert test.locate(0).startswith("row ")  # messages keep the shard and row


def test_time_and_throughput_figures_agree_everywhere_and_span_a_resume(tmp_path, blob_npz,
                                                                         caplog):
    """Each figure has one name and one value in the log, history.csv, metrics.json and the
    report; a resumed run's wall time covers every session."""
    import csv
    import logging

    common = ["name=r", "data.format=npz", f"data.train={blob_npz}", "model.name=tiny_cnn",
              "train.early_stopping_patience=0"]
    run_job(tmp_path, *common, "train.epochs=2")
    run = tmp_path / "r"
    first = json.loads((run / "metrics.json").read_text())["training"]
    caplog.clear()  # the resumed session's lines alone
    with caplog.at_level(logging.INFO, logger="trainer"):
        run_job(tmp_path, *common, "train.epochs=4")  # resumes after epoch 2
    training = json.loads((run / "metrics.json").read_text())["training"]
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    epochs = [float(r["epoch_time_s"]) for r in rows]
    assert training["resumed_from_epoch"] == 2
    assert training["wall_time_s"] >= sum(epochs)
    assert training["wall_time_s"] - training["session_wall_time_s"] >= sum(epochs[:2])
    assert training["wall_time_s"] - training["session_wall_time_s"] <= first["wall_time_s"]
    assert training["session_wall_time_s"] >= sum(epochs[2:])
    for r in rows:  # the training steps alone are faster than the whole epoch
        assert float(r["train_samples_per_s"]) >= float(r["epoch_samples_per_s"]) > 0
        assert "samples_per_s" not in r
    # the run's rate: this session's epochs after its first, by the per-epoch figure's name
    rate = training["train_samples_per_s"]
    assert rate == float(rows[3]["train_samples_per_s"])
    logged = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("train_samples_per_s ")]
    assert len(logged) == 1 and logged[0].startswith(f"train_samples_per_s {rate:.0f} ")
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 4/4")]
    assert f"train_samples_per_s={float(rows[3]['train_samples_per_s']):.4g}" in epoch_lines[0]
    html = (run / "report.html").read_text()
    assert f"<b>train_samples_per_s {rate:,.0f}</b>" in html
    assert "<th>train_samples_per_s</th><th>epoch_samples_per_s</th>" in html
    wall = round(training["wall_time_s"], 1)
    assert f'<td>wall_time_s (every session)</td><td class="num">{wall:.4g}</td>' in html
    assert "Mean " not in html  # no second, differently defined rate
