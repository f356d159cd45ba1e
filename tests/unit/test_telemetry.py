"""The metric contract's shared pieces: names and Prometheus-style histogram quantiles."""

from __future__ import annotations

import pytest

from llmfleet.model_store.contract.telemetry import DIMENSIONS, dimensions, histogram_quantile, quantile_metric

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket_that_holds_the_rank():
    # 10 observations: 4 at <= 0.1 s, 8 at <= 0.5 s, all at <= 1 s.
    buckets = [(0.1, 4), (0.5, 8), (1.0, 10), (INF, 10)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1 + 0.4 * (5 - 4) / (8 - 4))
    assert histogram_quantile(buckets, 0.95) == pytest.approx(0.5 + 0.5 * (9.5 - 8) / 2)
    assert histogram_quantile(buckets, 0.0) == 0.0


def test_quantile_of_empty_histogram_is_none_and_inf_bucket_gives_last_bound():
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(0.1, 0), (INF, 0)], 0.5) is None
    assert histogram_quantile([(0.1, 1), (1.0, 1), (INF, 10)], 0.9) == 1.0


def test_quantile_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="quantile 1.5"):
        histogram_quantile([(1.0, 1)], 1.5)



def test_dimensions_follow_the_declared_order():
    assert tuple(dimensions("m", "prod", "ecs")) == DIMENSIONS
    assert quantile_metric("TimeToFirstToken", 90) == "TimeToFirstTokenP90"
