"""The model's architecture as a table of layers and a picture (plots/architecture.png and the
report's diagram): Graphviz's graph through `plot_model` where pydot and `dot` are installed,
else the layers in order, drawn by `plots.architecture_plot`."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from trainer.kerasflavor import keras
from trainer.outputs import plots
from trainer.outputs.html_parts import png_of


def _shape(layer, node: int) -> str:
    try:
        shape = layer.get_output_shape_at(node)
    except (AttributeError, RuntimeError, ValueError):
        return "?"
    return str(shape).replace("None", "N")


def layer_rows(model: keras.Model, depth: int = 0) -> list[list]:
    """(name, type, output shape, parameters) per layer, nested models indented below themselves."""
    rows = []
    for layer in model.layers:
        # A nested model's last node is its use inside the outer model.
        rows.append(["\u2003" * depth + layer.name, type(layer).__name__,
                     _shape(layer, -1), layer.count_params()])
        if isinstance(layer, keras.Model):
            rows += layer_rows(layer, depth + 1)
    return rows


def architecture_diagram(model: keras.Model) -> Optional[bytes]:
    """The model graph as a PNG via `plot_model`, or None without pydot and Graphviz's `dot`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.png")
        try:
            keras.utils.plot_model(model, to_file=path, show_shapes=True, expand_nested=True,
                                   dpi=72)
        except (ImportError, OSError, AttributeError, FileNotFoundError):
            return None
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return f.read()


def graphviz_available() -> bool:
    """Whether `plot_model` can draw: pydot importable and Graphviz's `dot` on the PATH."""
    import importlib.util
    import shutil

    return importlib.util.find_spec("pydot") is not None and shutil.which("dot") is not None


def architecture_png(model: keras.Model) -> tuple[bytes, bool]:
    """The architecture as a PNG, and whether Graphviz drew it: `plot_model`'s graph, else the
    layers in order as a column of boxes (`plots.architecture_plot`)."""
    diagram = architecture_diagram(model) if graphviz_available() else None
    if diagram is not None:
        return diagram, True
    return png_of(lambda f: plots.architecture_plot(layer_rows(model), f, model.name)), False


NO_GRAPHVIZ = ("Drawn without Graphviz (`dot` not found): the layers in order, not the graph; "
               "install pydot and Graphviz for the graph.")

