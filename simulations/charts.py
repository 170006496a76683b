"""The geometry of the reward-curve chart, drawn as SVG by the admin's template.

Pure: numbers in, coordinates and labels out, no Django. The template only
places what this computes, so the chart is tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Tableau 10, readable on the admin's light and dark backgrounds; the dashes
# keep the lines apart for readers who do not tell the colours apart.
COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#9c755f",
    "#ff9da7",
    "#edc948",
    "#bab0ac",
)
DASHES = ("", "6 3", "2 3", "8 3 2 3", "12 4")
MAX_POINTS = 1_000  # longer curves are averaged into this many buckets

WIDTH, HEIGHT = 760, 340
LEFT, RIGHT, BOTTOM = 62, 18, 48
LEGEND_ROW, LEGEND_TOP, CHAR_WIDTH, SAMPLE = 20, 16, 7.2, 26


@dataclass(frozen=True, slots=True)
class Tick:
    label: str
    at: float  # pixel position along its axis


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    colour: str
    dash: str
    points: str  # "x,y x,y ...": the polyline's points attribute
    count: int
    last: float | None  # the last plotted value
    legend_x: float
    legend_y: float

    @property
    def legend_sample_end(self) -> float:
        return self.legend_x + SAMPLE

    @property
    def legend_text_x(self) -> float:
        return self.legend_x + SAMPLE + 8


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    zero: float | None  # where reward 0 is, if in view
    rounds: int
    window: int
    bucket: int  # rounds per plotted point
    y_label: str = "Mean reward"
    key: str = "reward"  # names the SVG's ids: two charts on one page

    @property
    def x_label_y(self) -> float:
        return self.bottom + 38

    @property
    def y_label_x(self) -> float:
        return 16

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2

    @property
    def middle_y(self) -> float:
        return (self.top + self.bottom) / 2


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving mean: each value with the ``window - 1`` before it (fewer
    at the start), so a point shows only rounds already played."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def buckets(values: Sequence[float], size: int) -> list[float]:
    """The mean of each run of ``size`` values (the last may be shorter)."""
    if size <= 1:
        return list(values)
    return [
        sum(values[i : i + size]) / len(values[i : i + size])
        for i in range(0, len(values), size)
    ]


def nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``count`` ticks."""
    raw = span / max(count, 1)
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def _label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text.replace("-", "\u2212")


def default_window(rounds: int) -> int:
    """About a twentieth of the run, so short runs are drawn as played."""
    return 1 if rounds < 40 else max(1, rounds // 20)


def reward_chart(
    curve: Mapping[str, Sequence[float]],
    *,
    window: int = 1,
    y_label: str = "Mean reward",
    key: str = "reward",
) -> Chart:
    """Lay out one line per policy: rounds across, mean reward (or, with
    another ``y_label``, any per-round figure such as the regret) up."""
    names = list(curve)
    rounds = max((len(v) for v in curve.values()), default=0)
    bucket = max(1, math.ceil(rounds / MAX_POINTS))
    plotted = {n: buckets(smooth(list(curve[n]), window), bucket) for n in names}

    # The legend: one row of samples and names, wrapped to the width.
    legend, x, y = [], float(LEFT), float(LEGEND_TOP)
    for name in names:
        item = SAMPLE + 8 + CHAR_WIDTH * len(name) + 18
        if x > LEFT and x + item > WIDTH - RIGHT:
            x, y = float(LEFT), y + LEGEND_ROW
        legend.append((x, y))
        x += item
    top = y + LEGEND_ROW + 6
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM

    values = [v for series in plotted.values() for v in series]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    low, high = min(low, 0.0), max(high, 0.0)  # keep 0 in view: its sign matters
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    step = nice_step(high - low, 5)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step

    def px(index: float) -> float:  # a round's index (from 0) to x
        span = max(rounds - 1, 1)
        return LEFT + (right - LEFT) * index / span

    def py(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    series = []
    for i, name in enumerate(names):
        ys = plotted[name]
        # A bucket is drawn at its middle round.
        xs = [min(j * bucket + (bucket - 1) / 2, rounds - 1) for j in range(len(ys))]
        points = " ".join(
            f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, ys, strict=True)
        )
        series.append(
            Series(
                name=name,
                colour=COLOURS[i % len(COLOURS)],
                dash=DASHES[i % len(DASHES)],
                points=points,
                count=len(ys),
                last=ys[-1] if ys else None,
                legend_x=legend[i][0],
                legend_y=legend[i][1],
            )
        )

    y_ticks = []
    n_steps = round((high - low) / step)
    for k in range(n_steps + 1):
        value = low + k * step
        y_ticks.append(Tick(_label(value, step), py(value)))
    x_step = max(1, int(nice_step(max(rounds - 1, 1), 6)))
    x_values = [1] + list(range(x_step, rounds + 1, x_step))
    if rounds > 1 and rounds - x_values[-1] > x_step / 3:
        x_values.append(rounds)
    x_ticks = [Tick(f"{r:,}", px(r - 1)) for r in dict.fromkeys(x_values) if rounds]

    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=top,
        right=right,
        bottom=bottom,
        series=series,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        zero=py(0.0) if low < 0 < high else None,
        rounds=rounds,
        window=window,
        bucket=bucket,
        y_label=y_label,
        key=key,
    )


# --- the promotion gate's interval ----------------------------------------------

GATE_WIDTH, GATE_HEIGHT, GATE_SIDE = 520, 86, 24


@dataclass(frozen=True, slots=True)
class IntervalChart:
    """One interval on a horizontal axis, with 0 and the gate's floor -margin:
    where the bar starts against the floor is the verdict."""

    width: int
    height: int
    axis_y: float
    low_x: float
    high_x: float
    mean_x: float
    zero_x: float
    floor_x: float  # -margin
    ticks: list[Tick]
    low_label: str
    high_label: str
    mean_label: str
    floor_label: str
    outcome: str  # pass, worse or inconclusive: the bar's colour

    @property
    def bar_width(self) -> float:
        return max(self.high_x - self.low_x, 1.0)

    @property
    def axis_left(self) -> float:
        return GATE_SIDE

    @property
    def axis_right(self) -> float:
        return self.width - GATE_SIDE


def _signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}".replace("-", "\u2212")


def interval_chart(
    *, mean: float, low: float, high: float, margin: float, outcome: str
) -> IntervalChart:
    """Lay out [low, high] with its mean, beside 0 and -margin."""
    left, right = min(low, -margin, 0.0), max(high, 0.0)
    span = right - left
    if span < 1e-12:
        span = max(abs(mean), 0.01)
    # Room either side, then a whole number of nice steps.
    step = nice_step(span * 1.2, 4)
    left = math.floor((left - span * 0.1) / step) * step
    right = math.ceil((right + span * 0.1) / step) * step

    def px(value: float) -> float:
        return GATE_SIDE + (GATE_WIDTH - 2 * GATE_SIDE) * (value - left) / (
            right - left
        )

    ticks = []
    for k in range(round((right - left) / step) + 1):
        value = left + k * step
        ticks.append(Tick(_label(value, step), px(value)))
    return IntervalChart(
        width=GATE_WIDTH,
        height=GATE_HEIGHT,
        axis_y=58.0,
        low_x=px(low),
        high_x=px(high),
        mean_x=px(mean),
        zero_x=px(0.0),
        floor_x=px(-margin),
        ticks=ticks,
        low_label=_signed(low),
        high_label=_signed(high),
        mean_label=_signed(mean),
        floor_label="0" if margin == 0 else _signed(-margin, 3),
        outcome=outcome,
    )
