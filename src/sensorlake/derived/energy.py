"""Energy series computed on read: `energy_delta` (kWh), `cost` (tariff currency), `co2e` (kg)
and `demand_charge` (one row per local month). One store query serves all devices of a
request; the maths is in `sensorlake.energy`, the tariffs in `sensorlake.tariffs`.

Per reading (no `every`) a row is the delta of the interval that ends at its `ts`; with
`every` a row is the sum over the bucket (whole days and weeks in the device's local time),
whatever `agg` says: energy, money and CO2e add up. Rows of a range are the intervals that
end in (from, to].
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from sensorlake.derived.base import SERIES_COLUMNS, DerivedRequest, DerivedSeries, register
from sensorlake.energy import ONE_US, bucket_sums, demand_peaks, device_deltas, in_range
from sensorlake.errors import ConfigError, InputError
from sensorlake.model import TS_TYPE
from sensorlake.store.base import ReadingQuery
from sensorlake.tariffs import Demand, TariffBook, Tariffs, prices

INPUTS = ("energy", "power")
READ_LIMIT = 1_000_000_000


def tariffs_of(request: DerivedRequest) -> Tariffs:
    """The tariffs in force; a broken file is an InputError (HTTP 422) with its message, so
    the caller reads what to fix instead of a bare 500."""
    try:
        return Tariffs.from_settings(request.settings)
    except ConfigError as exc:
        raise InputError(f"cannot price energy: {exc}") from None


def zones_of(request: DerivedRequest) -> dict[str, str]:
    return {d: request.timezone_of(d) for d in request.device_ids}


def read_deltas(request: DerivedRequest, start: datetime, end: datetime) -> pl.DataFrame:
    """device_id, ts, delta, status of the intervals ending in (start, end], from one query
    that also reads `energy.lookback_hours` before `start` for the previous readings."""
    energy = request.settings.energy
    query = ReadingQuery(tenant=request.tenant, metrics=INPUTS, device_ids=request.device_ids,
                         start=start - timedelta(hours=energy.lookback_hours),
                         end=end + ONE_US, limit=READ_LIMIT)
    rows = pl.from_arrow(request.read(query).select(["device_id", "metric", "ts", "value"]))
    assert isinstance(rows, pl.DataFrame)
    deltas = device_deltas(rows, timedelta(seconds=energy.max_gap_seconds),
                           energy.counter_jitter_kwh)
    return in_range(deltas, start, end)


def with_tariffs(request: DerivedRequest, deltas: pl.DataFrame, tariffs: Tariffs) -> pl.DataFrame:
    """Add tariff, currency and co2e factor per device (one small lookup table, joined)."""
    book = tariffs.book
    rows = []
    for device in request.device_ids:
        name = book.tariff_for(request.tenant, device, request.tags_of(device)) if book else None
        rows.append({"device_id": device, "tariff": name, "tz": request.timezone_of(device),
                     "currency": book.currency_of(name) if book and name else None,
                     "factor": book.co2e_of(name, tariffs.grid_co2e_kg_per_kwh) if book
                     else tariffs.grid_co2e_kg_per_kwh})
    table = pl.DataFrame(rows, schema={"device_id": pl.String, "tariff": pl.String,
                                       "tz": pl.String, "currency": pl.String,
                                       "factor": pl.Float64})
    return deltas.join(table, on="device_id", how="left")


def series_table(frame: pl.DataFrame, metric: str, extras: dict[str, pa.DataType]) -> pa.Table:
    """SERIES_COLUMNS then `extras`, typed, from a frame with device_id, ts, value, count."""
    schema = pa.schema([*SERIES_COLUMNS, *(pa.field(n, t) for n, t in extras.items())])
    if frame.is_empty():
        return schema.empty_table()
    out = frame.with_columns(pl.lit(metric).alias("metric")).select(schema.names)
    return out.to_arrow().cast(schema)


def shaped(request: DerivedRequest, frame: pl.DataFrame, metric: str, value: str,
           extras: dict[str, pa.DataType], keys: tuple[str, ...] = ()) -> pa.Table:
    """Per-reading rows, or bucket sums when the request has `every`."""
    if request.every is None:
        rows = frame.with_columns(pl.col(value).alias("value"),
                                  pl.lit(1, pl.Int64).alias("count"))
    else:
        rows = bucket_sums(frame, request.every, zones_of(request), value, keys)
    return series_table(rows, metric, extras)


def energy_delta(request: DerivedRequest) -> pa.Table:
    deltas = read_deltas(request, request.start, request.end)
    return shaped(request, deltas, "energy_delta", "delta", {"status": pa.string()})


def cost(request: DerivedRequest) -> pa.Table:
    tariffs = tariffs_of(request)
    frame = with_tariffs(request, read_deltas(request, request.start, request.end), tariffs)
    if tariffs.book is not None and not frame.is_empty():
        moments = frame.select(pl.col("ts") - ONE_US, "tz", "tariff")
        frame = frame.with_columns(prices(tariffs.book, moments).alias("price"))
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("price"))
    frame = frame.with_columns(
        (pl.col("delta") * pl.col("price")).alias("cost"),
        pl.when(pl.col("tariff").is_null()).then(pl.lit("no_tariff"))
        .otherwise(pl.col("status")).alias("status"))
    return shaped(request, frame, "cost", "cost",
                  {"currency": pa.string(), "status": pa.string()}, ("currency",))


def co2e(request: DerivedRequest) -> pa.Table:
    tariffs = tariffs_of(request)
    frame = with_tariffs(request, read_deltas(request, request.start, request.end), tariffs)
    frame = frame.with_columns(
        (pl.col("delta") * pl.col("factor")).alias("co2e"),
        pl.when(pl.col("factor").is_null()).then(pl.lit("no_factor"))
        .otherwise(pl.col("status")).alias("status"))
    return shaped(request, frame, "co2e", "co2e", {"status": pa.string()})


def month_bounds(instant: datetime, zones: set[str], after: bool) -> datetime:
    """The earliest local month start at or before `instant` over `zones` (or, `after`, the
    latest local month end after it), in UTC."""
    frame = pl.DataFrame({"ts": [instant]}, schema={"ts": pl.Datetime("us", "UTC")})
    edges = []
    for tz in zones or {"UTC"}:
        local = pl.col("ts").dt.convert_time_zone(tz).dt.truncate("1mo")
        if after:
            local = local.dt.offset_by("1mo")
        edges.append(frame.select(local.dt.convert_time_zone("UTC")).item())
    return max(edges) if after else min(edges)


def demand_terms(request: DerivedRequest, book: TariffBook) -> dict[str, tuple[Demand, str]]:
    """(demand terms, currency) of each device whose tariff has a demand charge."""
    terms = {}
    for device in request.device_ids:
        name = book.tariff_for(request.tenant, device, request.tags_of(device))
        demand = book.tariffs[name].demand if name else None
        if name and demand is not None:
            terms[device] = (demand, book.currency_of(name))
    return terms


def with_month_end(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `month_end`: the UTC instant the local month starting at `month` ends."""
    parts = [part.with_columns(pl.col("month").dt.convert_time_zone(str(tz)).dt.offset_by("1mo")
                               .dt.convert_time_zone("UTC").alias("month_end"))
             for (tz,), part in frame.partition_by("tz", as_dict=True,
                                                   maintain_order=True).items()]
    return pl.concat(parts) if parts else frame.with_columns(month_end=pl.col("month"))


def demand_charge(request: DerivedRequest) -> pa.Table:
    """One row per device and local calendar month overlapping the range (ts = the month's
    start, possibly before `from`): value = peak kW × price_per_kw."""
    extras = {"peak_kw": pa.float64(), "peak_ts": TS_TYPE, "currency": pa.string(),
              "status": pa.string()}
    book = tariffs_of(request).book
    terms = demand_terms(request, book) if book else {}
    if not terms:
        return series_table(pl.DataFrame(), "demand_charge", extras)
    zones = {d: request.timezone_of(d) for d in terms}
    start = month_bounds(request.start, set(zones.values()), after=False)
    end = month_bounds(request.end, set(zones.values()), after=True)
    deltas = read_deltas(request, start, end)
    peaks = []
    for interval in {demand.interval for demand, _ in terms.values()}:
        devices = [d for d, (demand, _) in terms.items() if demand.interval == interval]
        peaks.append(demand_peaks(deltas.filter(pl.col("device_id").is_in(devices)),
                                  interval, zones))
    rates = pl.DataFrame({"device_id": list(terms),
                          "rate": [demand.price_per_kw for demand, _ in terms.values()],
                          "currency": [currency for _, currency in terms.values()],
                          "tz": [zones[d] for d in terms]})
    now = datetime.now(UTC)
    frame = with_month_end(pl.concat(peaks).join(rates, on="device_id")).filter(
        (pl.col("month") < request.end) & (pl.col("month_end") > request.start)).with_columns(
        (pl.col("peak_kw") * pl.col("rate")).alias("value"), pl.col("month").alias("ts"),
        pl.when(pl.col("month_end") > now).then(pl.lit("open")).otherwise(pl.lit("final"))
        .alias("status")).sort("device_id", "ts")
    return series_table(frame, "demand_charge", extras)


register(DerivedSeries(
    name="energy_delta", unit="kWh", inputs=INPUTS, compute=energy_delta,
    description="Energy of each interval between readings, from the `energy` counter (resets "
    "and the Cayenne LPP rollover handled) or else integrated from `power`.",
    lookback=timedelta(hours=48), extra_columns=("status",)))
register(DerivedSeries(
    name="cost", unit="tariff currency", inputs=INPUTS, compute=cost,
    description="energy_delta × the device's tariff price at the end of each interval "
    "(local time of use); demand charges are the separate `demand_charge` series.",
    lookback=timedelta(hours=48), extra_columns=("currency", "status")))
register(DerivedSeries(
    name="co2e", unit="kg", inputs=INPUTS, compute=co2e,
    description="energy_delta × the grid CO2e factor (tariff, file or energy setting).",
    lookback=timedelta(hours=48), extra_columns=("status",)))
register(DerivedSeries(
    name="demand_charge", unit="tariff currency", inputs=INPUTS, compute=demand_charge,
    description="Monthly demand charge: the local month's highest demand-interval average "
    "power (kW) × the tariff's price_per_kw; one row per month.",
    lookback=timedelta(hours=48), extra_columns=("peak_kw", "peak_ts", "currency", "status")))
