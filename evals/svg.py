"""Escaping HTML builder and inline SVG plots for the self-contained report.

Every piece of text enters the page through :func:`el` (or :func:`esc`), which escapes it; only values
built by this module are :class:`Markup` and pass through unescaped. So dialogue text such as
``<script>`` or ``</textarea>`` can only ever render as text. Plots are plain SVG drawn here, so the page
needs no script and no network fetch at view time.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PALETTE = ["#3465a4", "#cc6d00", "#4e9a06", "#a40000", "#75507b", "#c4a000", "#204a87", "#5c3566"]
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*$")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Direction controls (RLO, LRE, isolates, marks...): hostile text could use them to reorder what follows."""
_NO_MARKUP_INSIDE = {"text", "tspan", "title", "style", "option", "textarea"}
"""Elements whose text cannot hold a ``<bdi>``: there the controls are shown as ``<U+202E>`` instead."""


class Markup(str):
    """HTML produced by this module; every other string is escaped when it enters a page."""


def esc(text: object) -> Markup:
    return Markup(html.escape(str(text), quote=True))


def visible_controls(text: str) -> str:
    """Direction controls replaced by a visible ``<U+XXXX>`` (for attributes and SVG text)."""
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def _text_node(text: str, tag: str) -> str:
    """Escaped text; text with direction controls is isolated in a ``<bdi>`` so it cannot reorder the page."""
    if not _BIDI.search(text):
        return esc(text)
    if tag in _NO_MARKUP_INSIDE:
        return esc(visible_controls(text))
    return f"<bdi>{esc(text)}</bdi>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "nan"
    return str(value)


def _children(items: Iterable[object], tag: str) -> Iterable[str]:
    for c in items:
        if c is None:
            continue
        if isinstance(c, Markup):
            yield c
        elif isinstance(c, list | tuple):
            yield from _children(c, tag)
        else:
            yield _text_node(_fmt(c), tag)


def el(tag: str, *children: object, **attrs: object) -> Markup:
    """``<tag attrs>children</tag>``; text children and attribute values are escaped.

    Attribute names come from code: a trailing ``_`` is dropped (``class_``) and ``_`` becomes ``-``.
    ``None``/``False`` attributes are left out.
    """
    if not _NAME.match(tag):
        raise ValueError(f"bad tag name {tag!r}")
    parts = [tag]
    for key, value in attrs.items():
        name = key.rstrip("_").replace("_", "-")
        if not _NAME.match(name):
            raise ValueError(f"bad attribute name {name!r}")
        if value is None or value is False:
            continue
        parts.append(name if value is True else f'{name}="{esc(visible_controls(_fmt(value)))}"')
    return Markup(f"<{' '.join(parts)}>{''.join(_children(children, tag))}</{tag}>")


def table(header: Sequence[object], rows: Iterable[Sequence[object]], **attrs: object) -> Markup:
    return el("table", el("thead", el("tr", [el("th", h) for h in header])),
              el("tbody", [el("tr", [el("td", c) for c in row]) for row in rows]), **attrs)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, drawn as a dot with whiskers."""

    label: str
    value: float
    lo: float
    hi: float
    series: int = 0
    strong: bool = False
    tag: str = ""
    """A trait's id, drawn small after its text (``label``); rows with a tag carry ``data-trait``."""
    group: str = ""
    """Consecutive rows of one group get a header line (pass rows sorted by group)."""


def clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters with an ellipsis (labels, excerpts)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:max(n - 1, 1)].rstrip() + "…"


def label(x: float, y: float, text: str, tag: str = "", *, chars: int = 40, anchor: str = "end",
          size: int = 11) -> Markup:
    """An SVG row label: the (clipped) text, the id as a small grey tag, the full text as a tooltip."""
    inner: list[object] = [clip(text, chars) if text else tag]
    if tag and text:
        inner += [" ", el("tspan", tag, fill="#888", font_size=size - 2)]
    if text:
        inner.append(el("title", f"{text} ({tag})" if tag else text))
    return el("text", inner, x=round(x, 1), y=round(y, 1), text_anchor=anchor, font_size=size,
              data_trait=tag or None)


def _svg(width: int, height: int, body: list[Markup], title: str) -> Markup:
    return el("svg", el("title", title), body, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
              viewBox=f"0 0 {width} {height}", role="img", class_="plot")


def _text(x: float, y: float, s: object, anchor: str = "start", size: int = 11, **kw: object) -> Markup:
    return el("text", s, x=round(x, 1), y=round(y, 1), text_anchor=anchor, font_size=size, **kw)


def _line(x1: float, y1: float, x2: float, y2: float, color: str = "#888", width: float = 1, **kw: object) -> Markup:
    return el("line", x1=round(x1, 1), y1=round(y1, 1), x2=round(x2, 1), y2=round(y2, 1), stroke=color,
              stroke_width=width, **kw)


def _finite(*xs: float) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def _axis(lo: float, hi: float) -> tuple[float, float]:
    if lo == hi:
        return lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / n)) if hi > lo else 1
    for mult in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def interval_plot(rows: Sequence[Interval], *, title: str, series_names: Sequence[str] = (),
                  zero: float | None = None, xlim: tuple[float, float] | None = None, width: int = 640,
                  label_width: int = 170) -> Markup:
    """Horizontal dot-and-whisker chart, one line per row (rows of several series share a label)."""
    labels = list(dict.fromkeys((r.label, r.tag) for r in rows))
    group_of = {(r.label, r.tag): r.group for r in rows}
    heads = {i for i, k in enumerate(labels) if group_of[k] and (i == 0 or group_of[labels[i - 1]] != group_of[k])}
    head_h = 15 if len({group_of[k] for k in labels}) > 1 else 0
    n_series = max((r.series for r in rows), default=0) + 1
    vals = _finite(*[v for r in rows for v in (r.lo, r.hi, r.value)], *([zero] if zero is not None else []))
    lo, hi = xlim or _axis(min(vals, default=0.0), max(vals, default=1.0))
    left, right, row_h, top = label_width, 20, 8 + 8 * n_series, 28 + 16 * bool(series_names)
    height = top + row_h * len(labels) + head_h * len(heads) + 30
    chars = max(8, int((label_width - 20) / 6.3))
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    body: list[Markup] = []
    for t in _ticks(lo, hi):
        body += [_line(x(t), top - 4, x(t), height - 26, "#e3e3e3"), _text(x(t), height - 12, _fmt(t), "middle")]
    if zero is not None:
        body.append(_line(x(zero), top - 4, x(zero), height - 26, "#555", 1, stroke_dasharray="3 3"))
    y0 = top - row_h
    for i, (text, tag) in enumerate(labels):
        y0 += row_h
        if i in heads and head_h:
            y0 += head_h
            body.append(_text(8, y0 - 3, group_of[(text, tag)], size=10, font_weight="bold", fill="#666"))
        body.append(label(left - 6, y0 + row_h / 2 + 4, text, tag, chars=chars - len(tag) // 2 - 1))
        for r in (r for r in rows if (r.label, r.tag) == (text, tag)):
            y = y0 + 6 + r.series * 8
            color = PALETTE[r.series % len(PALETTE)]
            if _finite(r.lo, r.hi) == [r.lo, r.hi]:
                body.append(_line(x(r.lo), y, x(r.hi), y, color, 2))
            if math.isfinite(r.value):
                body.append(el("circle", cx=round(x(r.value), 1), cy=y, r=4 if r.strong else 3,
                               fill=color if r.strong or zero is None else "#fff", stroke=color, stroke_width=1.5))
    for s, name in enumerate(series_names):
        body += [el("rect", x=left + s * 150, y=18, width=10, height=10, fill=PALETTE[s % len(PALETTE)]),
                 _text(left + s * 150 + 14, 27, name[:22])]
    body.insert(0, _text(8, 14, title, size=13, font_weight="bold"))
    return _svg(width, height, body, title)


def histogram(series: Sequence[tuple[str, Sequence[float]]], *, title: str, bins: int = 12) -> Markup:
    """Overlaid histograms (as density, so runs of different size compare) sharing one set of bins."""
    allv = _finite(*[v for _, vs in series for v in vs])
    lo, hi = _axis(min(allv, default=0.0), max(allv, default=1.0))
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    dens = []
    for _, vs in series:
        counts = [0] * bins
        for v in _finite(*vs):
            counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
        dens.append([c / max(len(vs), 1) for c in counts])
    top_d = max((d for ds in dens for d in ds), default=1.0) or 1.0
    left, width, height, top, bottom = 40, 640, 220, 40, 30
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - 20)  # noqa: E731
    y = lambda d: height - bottom - d / top_d * (height - top - bottom)  # noqa: E731
    body: list[Markup] = [_text(8, 14, title, size=13, font_weight="bold"),
                          _line(left, height - bottom, width - 20, height - bottom, "#555")]
    for t in _ticks(lo, hi):
        body.append(_text(x(t), height - 12, _fmt(t), "middle"))
    for s, ((name, _), ds) in enumerate(zip(series, dens, strict=True)):
        color = PALETTE[s % len(PALETTE)]
        for i, d in enumerate(ds):
            if d > 0:
                body.append(el("rect", x=round(x(edges[i]), 1), y=round(y(d), 1),
                               width=round(x(edges[i + 1]) - x(edges[i]) - 1, 1),
                               height=round(height - bottom - y(d), 1), fill=color, fill_opacity=0.45,
                               stroke=color))
        body += [el("rect", x=left + s * 150, y=20, width=10, height=10, fill=color),
                 _text(left + s * 150 + 14, 29, f"{name[:18]} (n={len(series[s][1])})")]
    return _svg(width, height, body, title)


def signed_bars(values: Sequence[tuple[str, str, float]], *, title: str, **kw: object) -> Markup:
    """Horizontal bars around zero, one per ``(text, tag, value)`` (aggregator weights by trait)."""
    rows = [Interval(label=k, tag=t, value=v, lo=0.0, hi=v, strong=True) for k, t, v in values]
    return interval_plot(rows, title=title, zero=0.0, **kw) if rows else _svg(640, 40, [_text(8, 20, title)], title)


def line_chart(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], *, title: str,
               xlabel: str = "step", width: int = 640, height: int = 200) -> Markup:
    """Lines over ``x`` (monitor curves), one per ``(text, tag, points)``, with a legend of trait labels below."""
    pts = [(x, y) for _, _, ps in series for x, y in ps if math.isfinite(x) and math.isfinite(y)]
    xlo, xhi = _axis(min((p[0] for p in pts), default=0.0), max((p[0] for p in pts), default=1.0))
    ylo, yhi = _axis(min((p[1] for p in pts), default=0.0), max((p[1] for p in pts), default=1.0))
    left, right, top, plot_h = 50, 20, 30, height - 60
    legend_h = 16 * len(series) if len(series) > 1 else 0
    X = lambda v: left + (v - xlo) / (xhi - xlo) * (width - left - right)  # noqa: E731
    Y = lambda v: top + plot_h - (v - ylo) / (yhi - ylo) * plot_h  # noqa: E731
    body: list[Markup] = [_text(8, 14, title, size=13, font_weight="bold")]
    for t in _ticks(ylo, yhi, 4):
        body += [_line(left, Y(t), width - right, Y(t), "#e3e3e3"), _text(left - 4, Y(t) + 4, _fmt(t), "end")]
    for t in _ticks(xlo, xhi, 6):
        body.append(_text(X(t), top + plot_h + 14, _fmt(t), "middle"))
    body.append(_text((left + width - right) / 2, top + plot_h + 28, xlabel, "middle"))
    for s, (text, tag, ps) in enumerate(series):
        color = PALETTE[s % len(PALETTE)]
        good = [(x, y) for x, y in ps if math.isfinite(x) and math.isfinite(y)]
        if len(good) > 1:
            body.append(el("polyline", points=" ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in good), fill="none",
                           stroke=color, stroke_width=2))
        body += [el("circle", cx=round(X(x), 1), cy=round(Y(y), 1), r=2.5, fill=color) for x, y in good]
        if legend_h:
            ly = top + plot_h + 44 + 16 * s
            body += [el("rect", x=left, y=ly - 9, width=10, height=10, fill=color),
                     label(left + 16, ly, text, tag, chars=int((width - left - 40) / 6.3), anchor="start")]
    return _svg(width, height + legend_h, body, title)


def reliability_diagram(points: Sequence[tuple[float, float, int]], *, title: str) -> Markup:
    """Predicted probability vs observed frequency per bin (dot area ~ count), with the diagonal."""
    size, pad = 300, 40
    s = lambda v: pad + v * (size - 2 * pad)  # noqa: E731
    body: list[Markup] = [_text(8, 14, title, size=13, font_weight="bold"),
                          el("rect", x=pad, y=pad, width=size - 2 * pad, height=size - 2 * pad, fill="none",
                             stroke="#999"),
                          _line(s(0), size - s(0), s(1), size - s(1), "#999", 1, stroke_dasharray="4 3")]
    for t in (0, 0.5, 1):
        body += [_text(s(t), size - pad + 14, t, "middle"), _text(pad - 4, size - s(t) + 4, t, "end")]
    body += [_text(size / 2, size - 6, "predicted P(human)", "middle"),
             _text(10, size / 2, "observed", "middle", transform=f"rotate(-90 10 {size / 2})")]
    total = sum(n for _, _, n in points) or 1
    pts = sorted(points)
    if len(pts) > 1:
        body.append(el("polyline", points=" ".join(f"{s(p):.1f},{size - s(f):.1f}" for p, f, _ in pts),
                       fill="none", stroke=PALETTE[0], stroke_width=1.5))
    for p, f, n in pts:
        body.append(el("circle", cx=round(s(p), 1), cy=round(size - s(f), 1),
                       r=round(2.5 + 9 * math.sqrt(n / total), 1), fill=PALETTE[0], fill_opacity=0.6))
    return _svg(size, size, body, title)
