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


class Markup(str):
    """HTML produced by this module; every other string is escaped when it enters a page."""


def esc(text: object) -> Markup:
    return Markup(html.escape(str(text), quote=True))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "nan"
    return str(value)


def _children(items: Iterable[object]) -> Iterable[str]:
    for c in items:
        if c is None:
            continue
        if isinstance(c, Markup):
            yield c
        elif isinstance(c, list | tuple):
            yield from _children(c)
        else:
            yield esc(_fmt(c))


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
        parts.append(name if value is True else f'{name}="{esc(_fmt(value))}"')
    return Markup(f"<{' '.join(parts)}>{''.join(_children(children))}</{tag}>")


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
                  zero: float | None = None, xlim: tuple[float, float] | None = None) -> Markup:
    """Horizontal dot-and-whisker chart, one line per row (rows of several series share a label)."""
    labels = list(dict.fromkeys(r.label for r in rows))
    n_series = max((r.series for r in rows), default=0) + 1
    vals = _finite(*[v for r in rows for v in (r.lo, r.hi, r.value)], *([zero] if zero is not None else []))
    lo, hi = xlim or _axis(min(vals, default=0.0), max(vals, default=1.0))
    left, right, row_h, top = 170, 20, 8 + 8 * n_series, 28 + 16 * bool(series_names)
    width, height = 640, top + row_h * len(labels) + 30
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    body: list[Markup] = []
    for t in _ticks(lo, hi):
        body += [_line(x(t), top - 4, x(t), height - 26, "#e3e3e3"), _text(x(t), height - 12, _fmt(t), "middle")]
    if zero is not None:
        body.append(_line(x(zero), top - 4, x(zero), height - 26, "#555", 1, stroke_dasharray="3 3"))
    for i, label in enumerate(labels):
        y0 = top + i * row_h
        body.append(_text(left - 6, y0 + row_h / 2 + 4, label[:28], "end"))
        for r in (r for r in rows if r.label == label):
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


def signed_bars(values: Sequence[tuple[str, float]], *, title: str) -> Markup:
    """Horizontal bars around zero (aggregator weights by trait id)."""
    rows = [Interval(label=k, value=v, lo=0.0, hi=v, strong=True) for k, v in values]
    return interval_plot(rows, title=title, zero=0.0) if rows else _svg(640, 40, [_text(8, 20, title)], title)


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
