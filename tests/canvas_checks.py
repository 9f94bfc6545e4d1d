"""One check for every family's figures: what is drawn lies inside the canvas.

Measured the way a reader sees it: the renderer's window extents of the texts (in display pixels)
against the figure's bounding box, after a draw has run the layout engine.
"""

from __future__ import annotations


def inside(inner, outer, tol: float = 0.5) -> bool:
    """``inner`` lies within ``outer`` (display-unit bounding boxes), up to ``tol`` pixels."""
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol and inner.x1 <= outer.x1 + tol
            and inner.y1 <= outer.y1 + tol)


def _texts(fig) -> list[tuple[str, object]]:
    """(what, Text) of the suptitle, the figure-level axis labels, and every visible panel's titles
    (centre, left, right) and axis labels (colorbars included)."""
    found = []
    for what in ("_suptitle", "_supxlabel", "_supylabel"):
        text = getattr(fig, what, None)
        if text is not None:
            found.append((what.lstrip("_"), text))
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for what, text in (("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title),
                           ("x label", ax.xaxis.label), ("y label", ax.yaxis.label)):
            found.append((f"axes {i} {what}", text))
    return [(what, text) for what, text in found if text.get_visible() and text.get_text().strip()]


def off_canvas(fig) -> list[str]:
    """Every title, suptitle, axis label and legend of ``fig`` not inside its canvas, and the whole
    drawing's extent when it is not, described (empty when all are inside); draws the figure first
    (the layout runs at draw time)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    bad = []
    for what, text in _texts(fig):
        box = text.get_window_extent(renderer)
        if not inside(box, canvas):
            bad.append(f"{what} {text.get_text()!r} at {box.bounds}, canvas {canvas.bounds}")
    # everything drawn (tick labels, colorbars, texts too), in display units (the tight bbox is inches)
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    if not inside(drawn, canvas):
        bad.append(f"the drawing at {drawn.bounds}, canvas {canvas.bounds}")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        if not inside(box, canvas):
            bad.append(f"legend at {box.bounds}, canvas {canvas.bounds}")
    return bad


def titled_texts(fig) -> list[str]:
    """The texts :func:`off_canvas` looks at (so a test can see it looked at something)."""
    return [text.get_text() for _, text in _texts(fig)]
