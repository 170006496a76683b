"""The reward chart's geometry: pure, no database."""

from __future__ import annotations

import pytest

from simulations import charts


def points(series: charts.Series) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in series.points.split()]


def test_one_line_per_policy_with_a_point_per_round_in_the_plot_area():
    curve = {"a": [0.0, 0.5, 1.0], "b": [-1.0, 0.0, 0.25]}
    chart = charts.reward_chart(curve)

    assert [s.name for s in chart.series] == ["a", "b"]
    assert [s.count for s in chart.series] == [3, 3]
    a, b = (points(s) for s in chart.series)
    assert len(a) == len(b) == 3
    # Rounds run left to right across the whole plot, the first at the y axis.
    middle = (chart.left + chart.right) / 2
    assert [x for x, _ in a] == pytest.approx(
        [chart.left, middle, chart.right], abs=0.1
    )
    # Up is more reward: a's 1.0 is at the top tick, b's -1.0 at the bottom.
    assert a[2][1] == pytest.approx(chart.top, abs=0.1)
    assert b[0][1] == pytest.approx(chart.bottom, abs=0.1)
    assert a[0][1] == pytest.approx(chart.zero, abs=0.1)
    assert [t.label for t in chart.y_ticks] == [
        "\u22121.0",
        "\u22120.5",
        "0",
        "0.5",
        "1.0",
    ]
    assert [t.label for t in chart.x_ticks] == ["1", "2", "3"]
    assert chart.series[0].colour != chart.series[1].colour
    assert chart.series[0].dash != chart.series[1].dash


def test_smoothing_is_a_trailing_mean_that_keeps_every_round():
    assert charts.smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert charts.smooth([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    chart = charts.reward_chart({"a": [0.0, 1.0] * 10}, window=4)
    assert chart.series[0].count == 20 and chart.window == 4
    assert chart.series[0].last == pytest.approx(0.5)


def test_a_long_run_is_drawn_as_bucket_means_with_ticks_on_round_numbers():
    rounds = 2_500
    chart = charts.reward_chart({"a": [0.2] * rounds, "b": [0.1] * rounds})

    assert chart.bucket == 3
    assert [s.count for s in chart.series] == [834, 834]  # ceil(2500 / 3)
    assert [t.label for t in chart.x_ticks][:3] == ["1", "500", "1,000"]
    assert chart.x_ticks[-1].label == "2,500"
    assert chart.x_ticks[-1].at == pytest.approx(chart.right)
    assert charts.buckets([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.5, 3.5, 5.0]


def test_a_flat_curve_and_a_single_round_still_have_a_scale():
    chart = charts.reward_chart({"only": [0.0]})
    assert chart.series[0].count == 1
    assert len(chart.y_ticks) >= 2 and chart.top < chart.bottom
    assert [t.label for t in chart.x_ticks] == ["1"]


def test_many_policies_wrap_the_legend_and_push_the_plot_down():
    few = charts.reward_chart({"a": [0.0, 1.0]})
    names = {f"a-rather-long-policy-name-{i}": [0.0, 1.0] for i in range(10)}
    many = charts.reward_chart(names)
    rows = sorted({s.legend_y for s in many.series})
    assert len(rows) > 1
    assert many.top > few.top
    assert all(s.legend_text_x < many.width for s in many.series)


@pytest.mark.parametrize(
    ("span", "count", "step"),
    [(1.0, 5, 0.2), (19, 6, 5), (2499, 6, 500), (0.03, 5, 0.01)],
)
def test_nice_steps(span, count, step):
    assert charts.nice_step(span, count) == pytest.approx(step)


def test_the_gate_interval_sits_on_its_axis_beside_zero_and_the_floor():
    chart = charts.interval_chart(
        mean=0.01, low=-0.02, high=0.04, margin=0.005, outcome="inconclusive"
    )
    # Left to right: the interval's low end, the floor -0.005, 0, the mean, high.
    assert chart.low_x < chart.floor_x < chart.zero_x < chart.mean_x < chart.high_x
    # The scale is linear: 0.06 of difference over the bar, 0.005 to the floor.
    per_unit = (chart.high_x - chart.low_x) / 0.06
    assert chart.zero_x - chart.floor_x == pytest.approx(0.005 * per_unit)
    assert chart.mean_x - chart.zero_x == pytest.approx(0.01 * per_unit)
    assert chart.axis_left <= chart.low_x and chart.high_x <= chart.axis_right
    assert (chart.low_label, chart.high_label, chart.floor_label) == (
        "\u22120.0200",
        "+0.0400",
        "\u22120.005",
    )
    labels = [t.label for t in chart.ticks]
    assert "0" in labels


def test_an_interval_far_above_zero_keeps_zero_in_view():
    chart = charts.interval_chart(
        mean=0.5, low=0.4, high=0.6, margin=0.0, outcome="pass"
    )
    assert chart.axis_left <= chart.zero_x == chart.floor_x < chart.low_x
    assert chart.floor_label == "0"
    point = charts.interval_chart(
        mean=0.0, low=0.0, high=0.0, margin=0.0, outcome="pass"
    )
    assert point.bar_width >= 1.0
