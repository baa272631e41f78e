"""PNG plots of a run: training curves (seeds 000 and 004), the confusion matrix (seed 004), and
with `train.histograms` the per-layer training dynamics, their histograms as an image and as an
animated GIF, and the architecture where Graphviz is missing (seed 003's TODO list)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no screen on a training machine

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

# The two throughput columns of history.csv (`trainer.callbacks.epoch_timer` defines them).
RATES = ("train_samples_per_s", "epoch_samples_per_s")
# Columns of history.csv that are bookkeeping, not a quantity with a training and a validation
# curve (`samples_per_s`: the whole-epoch rate of runs written before it had its name).
_NOT_CURVES = {"epoch", "epoch_time_s", "samples_per_s", "rows_read", *RATES}


def rate(row: dict, key: str) -> float:
    """One of the RATES of a history row; NaN where the row has none (an older run's row has
    only `samples_per_s`, the whole-epoch rate)."""
    if key == "epoch_samples_per_s":
        return float(row.get(key, row.get("samples_per_s", float("nan"))))
    return float(row.get(key, float("nan")))


def curve_names(history: list[dict]) -> list[str]:
    """The quantities of history rows that have a training curve (and maybe a `val_` twin), in
    the order they first occur: the panels of a run's plot and of `trainer.compare`'s."""
    names: list[str] = []
    for row in history:
        names += [k for k in row if k not in _NOT_CURVES and not k.startswith("val_")
                  and k not in names]
    return names


def history_plot(history: list[dict], path, title: str) -> None:
    """One panel per quantity (loss and each metric), training against validation, saved."""
    fig = history_figure(history, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def history_figure(history: list[dict], title: str):
    """The figure of `history_plot`; epochs are whole numbers on its axis."""
    keys = curve_names(history)
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label="training")
        if f"val_{key}" in history[0]:
            ax.plot(epochs, [row.get(f"val_{key}", np.nan) for row in history], marker="o",
                    label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def confusion_plot(matrix: np.ndarray, class_names: list[str], path: str, title: str) -> None:
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray, path, title: str) -> None:
    """Predicted against true (one panel per output) above the residual distribution of each."""
    outputs = y_true.shape[1]
    fig, axes = plt.subplots(2, outputs, figsize=(4.2 * outputs, 7.4), squeeze=False)
    for k in range(outputs):
        t, p = y_true[:, k], y_pred[:, k]
        ax = axes[0][k]
        ax.scatter(t, p, s=10, alpha=0.6)
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", label="ideal")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(f"output {k}: predicted vs true")
        ax.legend()
        ax.grid(alpha=0.3)
        ax = axes[1][k]
        ax.hist(p - t, bins=30, color="tab:orange")
        ax.axvline(0, color="grey", linestyle="--")
        ax.set_xlabel("residual (predicted - true)")
        ax.set_ylabel("test samples")
        ax.set_title(f"output {k}: residuals")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def throughput_plot(history: list[dict], path, title: str) -> None:
    """Both samples/s figures per epoch: a falling bar shows an input or memory problem; a wide
    gap between the two, validation or callbacks that cost as much as training."""
    epochs = np.array([row["epoch"] for row in history], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for k, (key, colour) in enumerate(zip(RATES, ("tab:green", "tab:olive"))):
        values = [rate(row, key) for row in history]
        ax.bar(epochs + (k - 0.5) * 0.4, values, width=0.4, color=colour, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("samples/s")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- training dynamics (train.histograms; `trainer.callbacks.histograms.Dynamics`) -------------

DYNAMICS_FILES = ("layer_dynamics.png", "histograms.png", "histograms.gif")
_BINS = 30


def dynamics_curves(dynamics, path, title: str) -> None:
    """Per layer, over the epochs: the norm of its weights, of their gradient on the fixed
    batch, and the fraction of its outputs that are exactly zero (near 1: dead ReLU units)."""
    panels = (("weight norm", dynamics.weight_norm, "log"),
              ("gradient norm", dynamics.grad_norm, "log"),
              ("activations: zero fraction", dynamics.zero_fraction, "linear"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, curves, scale) in zip(axes, panels):
        for i, layer in enumerate(dynamics.layers):  # a layer has one colour and style throughout
            if layer in curves:
                ax.plot(dynamics.epochs, curves[layer], marker="o", markersize=3, label=layer,
                        color=colours[i % len(colours)],
                        linestyle=("-", "--", ":", "-.")[i // len(colours) % 4])
        ax.set_yscale(scale if any(v > 0 for c in curves.values() for v in c) else "linear")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[2].set_ylim(-0.03, 1.03)
    handles, labels = axes[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _cells(dynamics) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(layer, kind, histogram counts of every epoch as rows, bin edges common to the epochs)
    of every layer and kind that has samples, in the model's order."""
    from trainer.callbacks.histograms import KINDS

    out = []
    for layer in dynamics.layers:
        for kind in KINDS:
            rows = dynamics.samples.get((kind, layer))
            if not rows:
                continue
            values = np.stack(rows)
            finite = values[np.isfinite(values)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if high <= low:
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, _BINS + 1)
            counts = np.stack([np.histogram(v[np.isfinite(v)], bins=edges)[0] for v in values])
            out.append((layer, kind, counts, edges))
    return out


# The histogram panels are drawn with Pillow, not matplotlib: a GIF of a few hundred epochs of a
# deep model is thousands of panels, which matplotlib takes minutes to draw on a busy CPU.
_CELL = (250, 118)  # width, height of one panel in pixels
_PLOT = (12, 28, 238, 100)  # the histogram's box inside a panel: left, top, right, bottom


def _panels(cells, title: str, draw) -> "PIL.Image.Image":  # noqa: F821
    """A grid of panels, a row per layer and a column per kind; `draw(image, box, counts,
    edges)` draws one cell's histogram into its box."""
    from PIL import Image, ImageDraw

    from trainer.callbacks.histograms import KINDS

    layers = list(dict.fromkeys(layer for layer, *_ in cells))
    width, height = _CELL[0] * len(KINDS), _CELL[1] * len(layers) + 24
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    pen.text((8, 6), title, fill="black")
    for layer, kind, counts, edges in cells:
        x0, y0 = _CELL[0] * KINDS.index(kind), 24 + _CELL[1] * layers.index(layer)
        pen.text((x0 + 8, y0 + 4), f"{layer}: {kind}"[:40], fill="black")
        box = (x0 + _PLOT[0], y0 + _PLOT[1], x0 + _PLOT[2], y0 + _PLOT[3])
        pen.rectangle(box, outline="#999999")
        draw(image, box, counts, edges)
        pen.text((box[0], box[3] + 2), f"{edges[0]:.3g}", fill="#444444")
        right = f"{edges[-1]:.3g}"
        pen.text((box[2] - 6 * len(right), box[3] + 2), right, fill="#444444")
    return image


def _heat(image, box, counts, edges) -> None:
    """Epochs down, values across, log count as the colour (viridis)."""
    from PIL import Image

    shade = np.log1p(counts.astype(np.float64))
    shade = shade / shade.max() if shade.max() > 0 else shade
    rgb = (matplotlib.colormaps["viridis"](shade)[..., :3] * 255).astype(np.uint8)
    tile = Image.fromarray(rgb).resize((box[2] - box[0] - 1, box[3] - box[1] - 1), Image.NEAREST)
    image.paste(tile, (box[0] + 1, box[1] + 1))


def histogram_image(dynamics, path, title: str) -> None:
    """Every epoch's histogram at once: a panel per layer (rows) and kind (weights, gradients,
    activations), epochs from top to bottom, values across, the count as the colour."""
    _panels(_cells(dynamics), f"{title}: histograms, epochs {dynamics.epochs[0]} (top) to "
            f"{dynamics.epochs[-1]} (bottom)", _heat).save(path, format="PNG")


def histogram_gif(dynamics, path, title: str) -> None:
    """An animated GIF, one frame per epoch: the histogram of every layer and kind that epoch,
    on axes that stay put from frame to frame (so the movement is the model's)."""
    from PIL import ImageDraw

    cells = _cells(dynamics)
    frames = []
    for i, epoch in enumerate(dynamics.epochs):
        def bars(image, box, counts, edges, i=i):
            top = max(1, int(counts.max()))
            pen = ImageDraw.Draw(image)
            step = (box[2] - box[0]) / len(counts[i])
            for b, n in enumerate(counts[i]):
                if n:
                    left = box[0] + b * step
                    high = min(box[3] - 1, box[3] - (box[3] - box[1]) * n / top)
                    pen.rectangle((left + 1, high, left + step - 1, box[3] - 1), fill="#1f77b4")

        frame = _panels(cells, f"{title}: epoch {epoch}", bars)
        frames.append(frame.convert("P", palette=1, colors=64))  # 1: Image.ADAPTIVE
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=600,
                   loop=0)


def architecture_plot(rows: list[list], path, title: str) -> None:
    """The model's layers as a column of boxes, top to bottom in the model's order (name, type,
    output shape, parameters): the diagram where Graphviz's `dot` is missing. `rows` are
    `architecture.layer_rows`; a nested model's layers follow it, indented."""
    height = 0.42 * len(rows) + 0.8
    fig, ax = plt.subplots(figsize=(6.5, height))
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows), -0.8)
    ax.axis("off")
    for i, (name, kind, shape, params) in enumerate(rows):
        depth = (len(name) - len(name.lstrip("\u2003")))
        x = 0.04 + 0.06 * depth
        ax.text(x, i, f"{name.strip()}  ({kind})   {shape}   {params:,} params", va="center",
                fontsize=8, family="monospace",
                bbox={"boxstyle": "round,pad=0.3", "fc": "#eef3fd" if kind not in (
                    "Sequential", "Functional", "Model") else "#fdf3e0", "ec": "#4c8bf5"})
        if i:
            ax.annotate("", xy=(0.02, i - 0.25), xytext=(0.02, i - 0.75),
                        arrowprops={"arrowstyle": "->", "color": "grey"})
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
