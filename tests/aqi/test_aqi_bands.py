"""Breakpoint tables against reference/aqi.md: every band edge, truncation, categories and the
official colours, through the array path the series use."""

from __future__ import annotations

import numpy as np
import pytest

from sensorlake.aqi import (
    UK_DAQI_BANDS,
    US_EPA_CATEGORIES,
    uk_daqi,
    uk_daqi_bands,
    us_epa_aqi,
    us_epa_categories,
    us_epa_truncate,
)

PM25_EDGES = [  # (µg/m³, AQI), 2024 table; truncation to 0.1 first
    (0.0, 0), (9.0, 50), (9.09, 50), (9.1, 51), (12.3, 57), (35.4, 100), (35.45, 100),
    (35.49, 100), (35.5, 101), (55.4, 150), (55.5, 151), (125.4, 200), (125.5, 201),
    (225.4, 300), (225.5, 301), (325.4, 500), (400.0, 649)]
PM10_EDGES = [
    (0, 0), (54, 50), (54.9, 50), (55, 51), (154, 100), (154.99, 100), (155, 101), (254, 150),
    (255, 151), (354, 200), (355, 201), (424, 300), (425, 301), (604, 500)]


@pytest.mark.parametrize(("pollutant", "concentration", "expected"),
                         [("pm2_5", c, a) for c, a in PM25_EDGES]
                         + [("pm10", c, a) for c, a in PM10_EDGES])
def test_us_band_edges(pollutant: str, concentration: float, expected: int) -> None:
    assert us_epa_aqi(pollutant, concentration) == expected
    assert us_epa_aqi(pollutant, np.array([concentration])).to_pylist() == [expected]


def test_truncation_not_rounding() -> None:
    values = np.array([9.09, 35.49, 17.41391, 0.05, np.nan])
    np.testing.assert_array_equal(us_epa_truncate("pm2_5", values),
                                  [9.0, 35.4, 17.4, 0.0, np.nan])
    np.testing.assert_array_equal(us_epa_truncate("pm10", np.array([54.9, 155.0, 0.99])),
                                  [54.0, 155.0, 0.0])


def test_us_categories_and_colours_match_the_reference() -> None:
    assert [(n, c) for _, n, c in US_EPA_CATEGORIES] == [
        ("Good", "#00E400"), ("Moderate", "#FFFF00"),
        ("Unhealthy for Sensitive Groups", "#FF7E00"), ("Unhealthy", "#FF0000"),
        ("Very Unhealthy", "#8F3F97"), ("Hazardous", "#7E0023")]
    names, colours = us_epa_categories(np.array([0, 50, 51, 100, 101, 150, 151, 200, 201, 300,
                                                 301, 500, 649, np.nan]))
    assert names.to_pylist() == [
        "Good", "Good", "Moderate", "Moderate", "Unhealthy for Sensitive Groups",
        "Unhealthy for Sensitive Groups", "Unhealthy", "Unhealthy", "Very Unhealthy",
        "Very Unhealthy", "Hazardous", "Hazardous", "Hazardous", None]
    assert colours.to_pylist()[:3] == ["#00E400", "#00E400", "#FFFF00"]
    assert colours.to_pylist()[-2:] == ["#7E0023", None]


DAQI_EDGES = {  # pollutant: (rounded-concentration upper edge of index 1..9)
    "pm2_5": (11, 23, 35, 41, 47, 53, 58, 64, 70),
    "pm10": (16, 33, 50, 58, 66, 75, 83, 91, 100),
}


@pytest.mark.parametrize("pollutant", ["pm2_5", "pm10"])
def test_daqi_band_edges(pollutant: str) -> None:
    for index, top in enumerate(DAQI_EDGES[pollutant], start=1):
        assert uk_daqi(pollutant, top) == index
        assert uk_daqi(pollutant, top + 0.49) == index  # rounds down to the edge
        assert uk_daqi(pollutant, top + 0.5) == index + 1  # rounds up into the next band
        assert uk_daqi(pollutant, top + 1) == index + 1
    assert uk_daqi(pollutant, 0) == 1
    assert uk_daqi(pollutant, 900) == 10


def test_daqi_bands_and_colours() -> None:
    assert [(i, b, c) for i, b, c in UK_DAQI_BANDS] == [
        (1, "Low", "#9CFF9C"), (2, "Low", "#31FF00"), (3, "Low", "#31CF00"),
        (4, "Moderate", "#FFFF00"), (5, "Moderate", "#FFCF00"), (6, "Moderate", "#FF9A00"),
        (7, "High", "#FF6464"), (8, "High", "#FF0000"), (9, "High", "#990000"),
        (10, "Very High", "#CE30FF")]
    names, colours = uk_daqi_bands(np.array([1, 3, 4, 7, 10, np.nan]))
    assert names.to_pylist() == ["Low", "Low", "Moderate", "High", "Very High", None]
    assert colours.to_pylist() == ["#9CFF9C", "#31CF00", "#FFFF00", "#FF6464", "#CE30FF", None]
