"""PNG plots of a run: training curves (seeds 000 and 004) and the confusion matrix (seed 004)."""

from __future__ import annotations

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
