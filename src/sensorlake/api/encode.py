"""Arrow tables to JSON without a Python object per row (polars writes the rows, orjson the
envelope around them). Timestamps become ISO 8601 UTC strings ending in `Z`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import polars as pl
import pyarrow as pa

from sensorlake.aqi import UK_DAQI_BANDS, US_EPA_CATEGORIES

ISO = "%Y-%m-%dT%H:%M:%S%.fZ"


def frame(table: pa.Table) -> pl.DataFrame:
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def iso_columns(data: pl.DataFrame, columns: Sequence[str] = ("ts",)) -> pl.DataFrame:
    present = [c for c in columns if c in data.columns]
    return data.with_columns(pl.col(c).dt.convert_time_zone("UTC").dt.to_string(ISO)
                             for c in present)


def rows_json(data: pl.DataFrame) -> orjson.Fragment:
    """The rows as a JSON array of objects, ready to embed with orjson."""
    return orjson.Fragment(data.write_json() if data.height else b"[]")


def with_aqi(data: pl.DataFrame) -> pl.DataFrame:
    """`category` and `colour` columns for aqi_us / aqi_uk rows (null on other metrics)."""
    index = pl.col("value").round(0)
    us_name, us_colour = pl.lit(None, pl.String), pl.lit(None, pl.String)
    for top, name, colour in reversed(US_EPA_CATEGORIES):
        us_name = pl.when(index <= top).then(pl.lit(name)).otherwise(us_name)
        us_colour = pl.when(index <= top).then(pl.lit(colour)).otherwise(us_colour)
    top_name, top_colour = US_EPA_CATEGORIES[-1][1], US_EPA_CATEGORIES[-1][2]
    us_name = pl.when(index > US_EPA_CATEGORIES[-1][0]).then(pl.lit(top_name)).otherwise(us_name)
    us_colour = pl.when(index > US_EPA_CATEGORIES[-1][0]).then(pl.lit(top_colour)).otherwise(
        us_colour)
    uk_name, uk_colour = pl.lit(None, pl.String), pl.lit(None, pl.String)
    for number, band, colour in UK_DAQI_BANDS:
        uk_name = pl.when(index == number).then(pl.lit(band)).otherwise(uk_name)
        uk_colour = pl.when(index == number).then(pl.lit(colour)).otherwise(uk_colour)
    valid = pl.col("value").is_not_nan() & (pl.col("value") >= 0)
    metric = pl.col("metric")
    return data.with_columns(
        category=pl.when(valid & (metric == "aqi_us")).then(us_name)
        .when(valid & (metric == "aqi_uk")).then(uk_name),
        colour=pl.when(valid & (metric == "aqi_us")).then(us_colour)
        .when(valid & (metric == "aqi_uk")).then(uk_colour))
