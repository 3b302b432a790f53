import pytest

from llmgw.bench.stats import PERCENTILES, percentile, summarize


def test_percentiles_of_one_to_a_thousand_are_the_nearest_rank_samples() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert [percentile(values, p) for p in PERCENTILES] == [500.0, 900.0, 990.0, 999.0]
    assert percentile(values, 100) == 1000.0


def test_percentile_is_always_an_observed_sample() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.0  # rank ceil(0.5 * 4) = 2, no interpolation to 2.5
    assert percentile(values, 99) == 4.0
    assert percentile(values, 99.9) == 4.0
    assert percentile([7.0], 50) == 7.0


def test_tail_percentiles_separate_on_ten_thousand_samples() -> None:
    # 9,990 fast requests and 10 slow ones: p99 is fast, p99.9 is the first slow one.
    values = sorted([1.0] * 9990 + [100.0 + i for i in range(10)])
    assert percentile(values, 99) == 1.0
    assert percentile(values, 99.9) == 1.0
    assert percentile(values, 99.91) == 100.0


def test_summarize_sorts_and_reports_min_mean_max() -> None:
    d = summarize([3.0, 1.0, 2.0, 10.0])
    assert d is not None
    assert (d.count, d.min, d.max, d.mean) == (4, 1.0, 10.0, 4.0)
    assert d.percentiles[50.0] == 2.0
    assert d.to_dict(1000.0)["p99.9"] == 10000.0


def test_summarize_of_nothing_is_none_and_bad_percentiles_raise() -> None:
    assert summarize([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
