"""Figures a reader can play with without a kernel: precomputed frames behind a slider.

A chapter computes a sweep (one vmapped call), draws one matplotlib figure per swept value in
the book's style, and :func:`slider_figure` packs the frames into one small, self-contained
HTML output: the frames as images, a range slider, the current value written next to it, and
a few lines of inline JavaScript that show the frame the slider points at. Nothing is loaded
from the network, so the same cell output works in Jupyter, JupyterLab, Colab and the static
HTML book (where ipywidgets' Python callbacks cannot run), and with the network unplugged.
Without JavaScript (an untrusted notebook) the starting frame is shown as a plain image.

This is the plotting layer: the core modules never import it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["SliderFigure", "slider_figure"]

_SCRIPT = """<script>
(function () {
  var root = document.getElementById("%(id)s");
  if (!root || root.getAttribute("data-ready")) { return; }
  root.setAttribute("data-ready", "1");
  var frames = root.querySelectorAll("img.bl-frame");
  var input = root.querySelector("input");
  var out = root.querySelector("output");
  var labels = %(labels)s;
  function show(i) {
    for (var j = 0; j < frames.length; j++) { frames[j].hidden = (j !== i); }
    out.textContent = labels[i];
    input.setAttribute("aria-valuetext", "%(name)s = " + labels[i]);
    root.setAttribute("data-current", String(i));
  }
  input.addEventListener("input", function () { show(parseInt(input.value, 10)); });
  var button = root.querySelector("button");
  if (button) {
    var timer = null;
    button.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; button.textContent = "play"; return; }
      button.textContent = "pause";
      if (parseInt(input.value, 10) === frames.length - 1) { input.value = "0"; show(0); }
      timer = setInterval(function () {
        var i = parseInt(input.value, 10) + 1;
        if (i >= frames.length) { clearInterval(timer); timer = null;
                                  button.textContent = "play"; return; }
        input.value = String(i); show(i);
      }, %(interval)d);
    });
  }
  show(parseInt(input.value, 10));
})();
</script>"""


class SliderFigure:
    """A precomputed interactive figure; displays itself as HTML (``_repr_html_``).

    Attributes:
      html: the self-contained HTML (frames, slider, value read-out, inline script).
      labels: the read-out of each frame, e.g. ``["1", "2", "4"]``.
      name: the swept parameter's name as shown next to the slider.
    """

    def __init__(self, html_text: str, labels: list[str], name: str):
        self.html = html_text
        self.labels = list(labels)
        self.name = name

    @property
    def num_frames(self) -> int:
        """Number of frames (one per swept value)."""
        return len(self.labels)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"SliderFigure({self.name}: {self.num_frames} frames)"


def _render(fig, image_format: str, dpi: float) -> str:
    """One figure as a ``data:`` URI (PNG or SVG), deterministic bytes; the figure is closed."""
    buf = io.BytesIO()
    if image_format == "png":
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        mime = "image/png"
    else:
        with mpl.rc_context({"svg.hashsalt": "bilevel-book", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        mime = "image/svg+xml"
    plt.close(fig)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def slider_figure(values, draw, *, name: str, alt: str, fmt: str = "{:g}", labels=None,
                  start: int = 0, play: bool = False, interval: int = 400, dpi: float = 100,
                  image_format: str = "png") -> SliderFigure:
    """A figure with a slider over a precomputed sweep, for Jupyter and the static book alike.

    For every swept value ``values[i]``, ``draw(i)`` returns a matplotlib figure (drawn with
    :mod:`bilevel_lib.plotting`, so it has the book's style and math labels; keep the axis
    limits fixed across frames so that only the data moves). The frames are rendered once
    and stacked in an HTML block whose range slider ``0 .. len(values) - 1`` shows frame
    ``i`` and writes ``name = label_i`` next to it; an optional play button steps through
    the frames. Display the result as a cell's last expression (or ``IPython.display``).

    Args:
      values: the swept values, a 1-D sequence (numbers, or anything ``labels`` names).
      draw: ``i -> matplotlib.figure.Figure`` for frame ``i`` (the figure is closed here).
      name: the swept parameter as shown to the reader, e.g. ``"K"`` or ``"ε"`` (plain text).
      alt: what the figure shows and what to look for (each frame's alt text adds its value).
      fmt: format of the value read-out, ``fmt.format(values[i])``.
      labels: read-out strings instead of ``fmt`` (one per value).
      start: index of the frame shown first.
      play: add a play/pause button (for sweeps over time).
      interval: milliseconds per frame when playing.
      dpi: resolution of PNG frames (the style's 150 is sharper but larger).
      image_format: ``"png"`` or ``"svg"``.

    Returns:
      A :class:`SliderFigure`.

    Example:
      >>> import matplotlib.pyplot as plt
      >>> ks = [1, 2, 4]
      >>> def draw(i):
      ...     fig, ax = plt.subplots(figsize=(2, 1.5))
      ...     ax.plot([0, 1], [0, ks[i]])
      ...     return fig
      >>> s = slider_figure(ks, draw, name="K", alt="a line of slope K")
      >>> s.num_frames, s.labels
      (3, ['1', '2', '4'])
      >>> s.html.count('class="bl-frame"'), 'max="2"' in s.html
      (3, True)
    """
    values = list(np.asarray(values).tolist()) if not isinstance(values, list) else values
    n = len(values)
    if n < 1:
        raise ValueError("`values` must hold at least one value.")
    if labels is None:
        labels = [fmt.format(v) for v in values]
    labels = [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"`labels` must have one entry per value ({n}); got {len(labels)}.")
    if not 0 <= start < n:
        raise ValueError(f"`start` must be in [0, {n - 1}]; got {start}.")
    if image_format not in ("png", "svg"):
        raise ValueError(f"`image_format` must be 'png' or 'svg'; got {image_format!r}.")
    if not callable(draw):
        raise TypeError("`draw` must be a callable i -> matplotlib figure.")

    uris = []
    for i in range(n):
        fig = draw(i)
        if not hasattr(fig, "savefig"):
            raise TypeError(f"`draw({i})` must return a matplotlib figure; got {type(fig)}.")
        uris.append(_render(fig, image_format, dpi))

    esc_name = html.escape(name)
    imgs = "\n".join(
        f'<img class="bl-frame" src="{uri}" alt="{html.escape(alt)} ({esc_name} = '
        f'{html.escape(label)})" style="max-width:100%;height:auto"'
        f'{"" if i == start else " hidden"}>'
        for i, (uri, label) in enumerate(zip(uris, labels, strict=True))
    )
    # A content hash names the block: stable across re-executions, unique on a page.
    uid = "bl-slider-" + hashlib.sha256(
        (name + alt + "".join(uris)).encode()).hexdigest()[:12]
    button = ('<button type="button" class="bl-play" style="margin-right:0.6em">play</button>'
              if play else "")
    controls = (
        f'<div class="bl-controls" style="display:flex;align-items:center;gap:0.6em;'
        f'flex-wrap:wrap;font-size:0.95em">{button}'
        f'<label for="{uid}-input"><var>{esc_name}</var></label>'
        f'<input id="{uid}-input" type="range" min="0" max="{n - 1}" step="1" value="{start}" '
        f'aria-label="{esc_name}" style="flex:1;min-width:10em;max-width:28em">'
        f'<span><var>{esc_name}</var> = <output for="{uid}-input">'
        f'{html.escape(labels[start])}</output></span></div>'
    )
    script = _SCRIPT % {"id": uid, "labels": json.dumps(labels).replace("</", "<\\/"),
                        "name": name.replace("\\", "\\\\").replace('"', '\\"'),
                        "interval": int(interval)}
    text = (f'<div id="{uid}" class="bl-slider" role="group" aria-label="{html.escape(alt)}" '
            f'data-frames="{n}" data-current="{start}">\n{imgs}\n{controls}\n{script}\n</div>')
    return SliderFigure(text, labels, name)
