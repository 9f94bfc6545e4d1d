"""Figure set-up and saving shared by every family's figures (images, dynamics, arithmetic).

* :func:`pyplot` -- matplotlib with the Agg backend (figure jobs run on machines without a display,
  under Snakemake and SLURM) and the pipeline's style, set once per process;
* :func:`subplots` -- a grid of panels with constrained layout, so panel titles, axis labels,
  colorbars and legends outside the panels get room instead of being cut off;
* :func:`suptitle` / :func:`wrap_title` -- a figure title wrapped to the figure's width (a title
  wider than the canvas cannot be placed inside it by any layout);
* :func:`save_figure` -- the one way a figure is written: atomically (a reader never sees half a
  PNG), with a tight bounding box (whatever still sticks out of the canvas is kept), then closed.

Torch-free and pandas-free; matplotlib is imported only when a figure is drawn (the Snakefile imports
the families' figure registries).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

#: The pipeline's matplotlib style: only what keeps figures the same on every machine (a user's
#: matplotlibrc may set a transparent background or a different font size); layout is per figure.
STYLE: dict[str, Any] = {
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "font.size": 10.0,
    "axes.titlesize": "large",
    "axes.labelsize": "medium",
    "legend.fontsize": "medium",
    "figure.titlesize": "large",
    # a figures job draws dozens of figures and closes each after saving
    "figure.max_open_warning": 0,
    # SVG output byte-identical across runs
    "svg.hashsalt": "pipeline",
}

#: Suptitle font size (points); titles wrap to the figure's width.
TITLE_SIZE = 11

#: Padding (inches) kept around the tight bounding box when saving.
PAD_INCHES = 0.05

_configured = False


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with :data:`STYLE` applied (once per process)."""
    global _configured
    import matplotlib

    if not _configured:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not _configured:
        plt.rcParams.update(STYLE)
        _configured = True
    return plt


def subplots(nrows: int = 1, ncols: int = 1, *, panel_width: float, panel_height: float, **kw):
    """``(figure, axes[nrows, ncols])`` with constrained layout, each panel
    ``panel_width x panel_height`` inches."""
    plt = pyplot()
    nrows, ncols = max(int(nrows), 1), max(int(ncols), 1)
    kw.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, figsize=(panel_width * ncols, panel_height * nrows),
                        layout="constrained", **kw)


def wrap_title(fig, text: str, fontsize: float = TITLE_SIZE) -> str:
    """``text`` wrapped to lines that fit the figure's width (average glyph ~0.6 em, a margin);
    lines already broken stay broken."""
    width_pt = fig.get_figwidth() * 72 * 0.92
    chars = max(int(width_pt / (0.6 * fontsize)), 20)
    return "\n".join(line for part in text.split("\n")
                     for line in (textwrap.wrap(part, chars, break_long_words=True, break_on_hyphens=False)
                                  or [""]))


def suptitle(fig, text: str, fontsize: float = TITLE_SIZE):
    """The figure's title, wrapped to its width (:func:`wrap_title`)."""
    return fig.suptitle(wrap_title(fig, text, fontsize), fontsize=fontsize)


def save_figure(fig, path: str | os.PathLike, *, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG without one) atomically, with a tight
    bounding box so no title, label or legend is cut off, and close it. Returns the path."""
    from pipeline.core.artifacts import atomic_path

    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png", bbox_inches="tight",
                        pad_inches=PAD_INCHES)
    finally:
        plt.close(fig)
    return path
