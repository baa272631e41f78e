"""The pieces every page and figure of a run's report is made of: text escaped with its
credentials redacted, tables, and PNG images embedded as `data:` URIs (no file, no script), so
`report.html` stays one self-contained file."""

from __future__ import annotations

import base64
import html
import io
from typing import Callable

import numpy as np
from PIL import Image

from trainer.data.finite import zeroed
from trainer.runtime import secrets


# The pages' one style sheet (report.html, crossval.html).
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sub { color: #666; } .bar { background: #4c8bf5; height: 0.8em; display: inline-block; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; text-align: center; font-size: 0.85em; width: 112px; }
.gallery img { width: 96px; height: 96px; image-rendering: pixelated; border: 2px solid #d33; }
img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
nav a { margin-right: 1em; }
"""


def esc(value: object) -> str:
    """Every text the page shows passes here: escaped, with credentials redacted (a run's name
    or folder, a data URL, a class name may carry one)."""
    return html.escape(secrets.redact_text(str(value)))


def img(png: bytes, alt: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
    return (f'<img alt="{esc(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"{extra}>')


def png_of(draw: Callable[[io.BytesIO], None]) -> bytes:
    """The PNG that a `plots` function writes, caught in memory instead of a file."""
    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


def cell(value: object) -> str:
    """Numbers right-aligned (floats to 4 significant digits), everything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return f"<td>{esc(value)}</td>"
    text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else f"{value:,}"
    return f'<td class="num">{text}</td>'


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image_png(image: np.ndarray, scale_to: int = 96) -> bytes:
    """A (H, W, C) image of any range as a viewable PNG (min-max scaled, first 3 channels);
    NaN and Inf show as 0, the value `data.nonfinite: zero` gave the model."""
    x = zeroed(np.asarray(image, dtype=np.float32))
    if x.ndim == 3 and x.shape[-1] not in (1, 3):
        x = x[..., :1]
    low, high = float(x.min()), float(x.max())
    x = (x - low) / (high - low) * 255 if high > low else np.zeros_like(x)
    x = x.astype(np.uint8)
    picture = Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x)
    if max(picture.size) < scale_to:
        factor = max(1, scale_to // max(picture.size))
        picture = picture.resize((picture.size[0] * factor, picture.size[1] * factor), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()

