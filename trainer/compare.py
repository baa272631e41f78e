"""`python -m trainer.compare RUN_DIR ... [--out DIR]`: several runs side by side.

Reads each run's `metrics.json`, `config.yaml` and `history.csv` (local or `gs://`, through the
storage layer) and writes one table (printed and `compare.csv`; the config keys that differ
between the runs are columns of it) and one plot with every run's
curves overlaid (`compare.png`), so "which of these is better, and since when?" takes one look.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import yaml  # noqa: E402
from absl import flags  # noqa: E402

from trainer import cli, config as config_mod, storage  # noqa: E402
from trainer.outputs.plots import curve_names  # noqa: E402
from trainer.outputs.table import text_table, write_csv  # noqa: E402
from trainer.errors import UserError  # noqa: E402

FLAGS = cli.new_flags()
flags.DEFINE_string("out", ".", "Folder for compare.csv and compare.png (local or gs://).",
                    flag_values=FLAGS)


@dataclass
class Run:
    url: str
    label: str
    metrics: dict
    config: dict
    history: list[dict]


def _read_optional(url: str, run: str) -> Optional[str]:
    if not storage.exists(url):
        return None
    storage.confine(url, run, " (a run's own files)")  # a link inside the run leads nowhere else
    return storage.read_text(url)


def load_run(url: str) -> Run:
    url = url.rstrip("/")
    metrics_url = storage.join(url, "metrics.json")
    if not storage.exists(metrics_url):
        raise UserError(f"no metrics.json in {url}, run directory, expected the folder of a "
                        "finished run (<output.dir>/<name>/)")
    storage.confine(metrics_url, url, " (a run's own files)")
    try:
        metrics = json.loads(storage.read_text(metrics_url))
    except json.JSONDecodeError:
        raise UserError(f"metrics.json is not JSON, {metrics_url}, expected the file trainer.task "
                        "writes") from None
    text = _read_optional(storage.join(url, "config.yaml"), url)
    config = yaml.safe_load(text) if text else {}
    text = _read_optional(storage.join(url, "history.csv"), url)
    history = [{k: float(v) for k, v in row.items() if v not in ("", None)}
               for row in csv.DictReader(io.StringIO(text))] if text else []
    return Run(url, url.rsplit("/", 1)[-1], metrics, config or {}, history)


def _unique_labels(runs: list[Run]) -> None:
    """Runs of the same name from different folders get their parent folder in the label."""
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = "/".join(r.url.rsplit("/", 2)[-2:])


SAME_BY_DESIGN = ("name", "output.dir")  # differ between any two runs; say nothing


def differing_keys(runs: list[Run]) -> list[str]:
    """The config keys (dotted) whose values are not the same in every run, in config order."""
    flats = [config_mod.flat(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if k not in SAME_BY_DESIGN
            and any(f.get(k) != flats[0].get(k) for f in flats[1:])]


def rows(runs: list[Run]) -> list[dict]:
    """One row per run: what it is, the config keys that differ between the runs, its scores."""
    differing = differing_keys(runs)
    metric_names = sorted({k for r in runs for split in ("val", "test")
                           for k in r.metrics.get(split, {})})
    out = []
    for r in runs:
        training = r.metrics.get("training", {})
        row = {"run": r.label, "model": r.config.get("model", {}).get("name", ""),
               "task": r.config.get("task", ""), "epochs": training.get("epochs_trained"),
               "best_epoch": training.get("best_epoch")}
        values = config_mod.flat(r.config)
        row.update({k: _shown(values.get(k)) for k in differing})
        for split in ("val", "test"):
            for name in metric_names:
                row[f"{split}_{name}"] = r.metrics.get(split, {}).get(name)
        row["wall_time_s"] = training.get("wall_time_s")
        row["train_samples_per_s"] = training.get("train_samples_per_s")
        out.append(row)
    return out


def _shown(value):
    """A config value as one table cell (lists and mappings as YAML's flow style)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return value


def curves_plot(runs: list[Run], path: str) -> None:
    """One panel per quantity; a colour per run; training dashed, validation solid."""
    keys = curve_names([h for r in runs for h in r.history]) or ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], keys):
        for i, r in enumerate(runs):
            colour = colours[i % len(colours)]
            epochs = [h["epoch"] for h in r.history]
            for prefix, style, suffix in (("", "--", " (train)"), ("val_", "-", " (val)")):
                values = [h.get(prefix + key, float("nan")) for h in r.history]
                if any(v == v for v in values):
                    ax.plot(epochs, values, style, color=colour, marker=".", label=r.label + suffix)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(urls: Sequence[str], out: str) -> tuple[list[dict], dict[str, str]]:
    """Load the runs, write compare.csv and compare.png to `out`; returns rows and where they went."""
    runs = [load_run(u) for u in urls]
    _unique_labels(runs)
    table_rows = rows(runs)
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        local_csv = os.path.join(tmp, "compare.csv")
        write_csv(table_rows, local_csv)
        local_png = os.path.join(tmp, "compare.png")
        curves_plot(runs, local_png)
        for name, local in (("table", local_csv), ("plot", local_png)):
            dest = storage.join(out, os.path.basename(local))
            storage.put_file(local, dest)
            written[name] = dest
    return table_rows, written


def compare_from_flags(urls: list[str]) -> int:
    if not urls:
        raise UserError("no runs given, command line, expected one or more run directories")
    storage.check_writable(FLAGS.out)
    table_rows, written = compare(urls, FLAGS.out)
    print(text_table(table_rows))
    print(f"\ntable: {written['table']}\nplot:  {written['plot']}")
    return 0


main = cli.Command(compare_from_flags, FLAGS, takes_args=True)

if __name__ == "__main__":
    main.run()
