"""Local days and months: 23- and 25-hour days in Europe/London, half-hour zones, coverage
from a cadence tag, late data marks exactly the affected buckets revised, the final flag,
and rollups outliving raw retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rollup_support import Clock, make_store, stored, table

from sensorlake.registry import Device

LONDON = Device(id="lon", tenant="t", tags={"tz": "Europe/London", "cadence": "10m"})
KOLKATA = Device(id="kol", tenant="t", tags={"tz": "Asia/Kolkata", "cadence": "10m"})
ADELAIDE = Device(id="adl", tenant="t", tags={"tz": "Australia/Adelaide"})


def every_10_minutes(device: str, start: datetime, end: datetime) -> list:
    rows, at = [], start
    while at < end:
        rows.append((device, "pm2_5", at, 1.0))
        at += timedelta(minutes=10)
    return rows


def test_dst_days_in_london_have_23_and_25_hours(tmp_path: Path) -> None:
    store = make_store(tmp_path / "h.duckdb", [LONDON], Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    spring = every_10_minutes("lon", datetime(2026, 3, 28, tzinfo=UTC),
                              datetime(2026, 3, 31, tzinfo=UTC))
    autumn = every_10_minutes("lon", datetime(2026, 10, 24, tzinfo=UTC),
                              datetime(2026, 10, 27, tzinfo=UTC))
    store.write(table(spring + autumn))
    store.refresh_rollups()
    days = stored(store, "1d")
    short = days[("t", "lon", "pm2_5", datetime(2026, 3, 29, tzinfo=UTC))]  # 00:00 GMT
    assert short["bucket_end"] == datetime(2026, 3, 29, 23, tzinfo=UTC)  # 00:00 BST
    assert short["count"] == 23 * 6 and short["expected"] == 23 * 6
    assert short["coverage"] == 100.0
    long = days[("t", "lon", "pm2_5", datetime(2026, 10, 24, 23, tzinfo=UTC))]  # 00:00 BST
    assert long["bucket_end"] == datetime(2026, 10, 26, tzinfo=UTC)  # 00:00 GMT
    assert long["count"] == 25 * 6 and long["expected"] == 25 * 6
    months = stored(store, "1mo")
    march = months[("t", "lon", "pm2_5", datetime(2026, 3, 1, tzinfo=UTC))]
    assert march["bucket_end"] == datetime(2026, 3, 31, 23, tzinfo=UTC)  # April 1st, BST
    assert march["count"] == len([r for r in spring if r[2] < march["bucket_end"]])
    store.close()


def test_half_hour_zones_cut_days_and_months_locally(tmp_path: Path) -> None:
    store = make_store(tmp_path / "h.duckdb", [KOLKATA, ADELAIDE],
                       Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    rows = every_10_minutes("kol", datetime(2026, 3, 30, tzinfo=UTC),
                            datetime(2026, 4, 2, tzinfo=UTC))
    rows += every_10_minutes("adl", datetime(2026, 3, 30, tzinfo=UTC),
                             datetime(2026, 4, 6, tzinfo=UTC))
    store.write(table(rows))
    store.refresh_rollups()
    days = stored(store, "1d")
    kol = days[("t", "kol", "pm2_5", datetime(2026, 3, 30, 18, 30, tzinfo=UTC))]
    assert kol["count"] == 144 and kol["coverage"] == 100.0
    assert kol["bucket_end"] == datetime(2026, 3, 31, 18, 30, tzinfo=UTC)
    # Adelaide leaves daylight time (+10:30 -> +9:30) on Sunday 5 April 2026: a 25-hour day
    adl = days[("t", "adl", "pm2_5", datetime(2026, 4, 4, 13, 30, tzinfo=UTC))]
    assert adl["bucket_end"] == datetime(2026, 4, 5, 14, 30, tzinfo=UTC)
    assert adl["count"] == 150
    months = stored(store, "1mo")
    april = months[("t", "kol", "pm2_5", datetime(2026, 3, 31, 18, 30, tzinfo=UTC))]
    assert april["count"] == len([r for r in rows if r[0] == "kol" and r[2] >= april["bucket"]])
    store.close()


def test_coverage_from_cadence_tag_and_estimate(tmp_path: Path) -> None:
    minute = Device(id="m", tenant="t", tags={"cadence": "60s"})
    free = Device(id="f", tenant="t")
    store = make_store(tmp_path / "h.duckdb", [minute, free],
                       Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    start = datetime(2026, 11, 2, tzinfo=UTC)
    rows = [("m", "co2", start + timedelta(minutes=2 * i), 400.0) for i in range(30)]
    rows += [("f", "co2", start + timedelta(seconds=10 * i), 400.0) for i in range(360)
             if i % 6 != 5]  # 5 of every 6 readings at a 10 s cadence
    store.write(table(rows))
    store.refresh_rollups()
    hour = stored(store, "1h")
    tagged = hour[("t", "m", "co2", start)]
    assert tagged["expected"] == 60 and tagged["coverage"] == 50.0
    estimated = hour[("t", "f", "co2", start)]
    assert estimated["interval_s"] == 10.0  # median of the minutes' mean intervals
    assert estimated["count"] == 300 and estimated["expected"] == 360
    assert abs(estimated["coverage"] - 100 * 300 / 360) < 1e-9
    store.close()


def test_late_data_revises_exactly_the_affected_final_buckets(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 3, 1, tzinfo=UTC))
    store = make_store(tmp_path / "h.duckdb", [LONDON], clock)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    store.write(table(every_10_minutes("lon", start, start + timedelta(days=2))))
    store.refresh_rollups()
    late = start + timedelta(hours=5, minutes=3)
    for grain in ("1m", "1h", "1d"):
        assert all(r["final"] for r in stored(store, grain).values())
    store.write(table([("lon", "pm2_5", start + timedelta(hours=5), 9.0)]))  # duplicate
    store.refresh_rollups()
    assert not any(r["revised"] for g in ("1m", "1h", "1d", "1mo")
                   for r in stored(store, g).values())
    store.write(table([("lon", "pm2_5", late, 9.0)]))
    store.refresh_rollups()
    revised = {g: [k[3] for k, r in stored(store, g).items() if r["revised"]]
               for g in ("1m", "1h", "1d", "1mo")}
    assert revised["1m"] == []  # a new minute bucket: nothing was final there before
    assert revised["1h"] == [datetime(2026, 11, 1, 5, tzinfo=UTC)]
    assert revised["1d"] == [datetime(2026, 11, 1, tzinfo=UTC)]
    assert revised["1mo"] == []  # November is not over: not final, so not revised
    store.write(table([("lon", "pm2_5", start + timedelta(hours=7, minutes=10, seconds=9),
                        2.0)]))  # into an existing, final minute
    store.refresh_rollups()
    assert [k[3] for k, r in stored(store, "1m").items() if r["revised"]] == [
        start + timedelta(hours=7, minutes=10)]
    store.close()


def test_final_flag_follows_the_grace(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 3, 30, tzinfo=UTC))
    store = make_store(tmp_path / "h.duckdb", [LONDON], clock, final_after=timedelta(minutes=2))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    store.write(table([("lon", "pm2_5", start + timedelta(minutes=i), 1.0) for i in range(3)]))
    store.refresh_rollups()
    finals = {k[3]: r["final"] for k, r in stored(store, "1m").items()}
    assert finals == {start: True, start + timedelta(minutes=1): False,
                      start + timedelta(minutes=2): False}  # end + 2 min <= 00:03:30
    clock.now += timedelta(minutes=1)
    store.write(table([("lon", "pm2_5", start + timedelta(minutes=4), 1.0)]))
    store.refresh_rollups()  # marks buckets final that were not dirty
    finals = {k[3]: r["final"] for k, r in stored(store, "1m").items()}
    assert finals[start + timedelta(minutes=1)] and not finals[start + timedelta(minutes=2)]
    store.close()


def test_rollups_survive_retention_and_old_dirty_minutes_are_skipped(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 20, tzinfo=UTC))
    store = make_store(tmp_path / "h.duckdb", [LONDON], clock, retention_days=10)
    start = datetime(2026, 11, 5, tzinfo=UTC)
    store.write(table(every_10_minutes("lon", start, start + timedelta(days=1))))
    # written before the horizon: raw may be partial there, so nothing is recomputed
    result = store.refresh_rollups()
    assert result.skipped == 144 and result.minutes == 0
    clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    store.write(table([("lon", "pm2_5", start, 5.0)]))  # a duplicate: marks its minute
    assert store.refresh_rollups().minutes == 1
    result = store.rebuild_rollups()  # every raw minute in the hot table
    assert result.minutes == 144 and len(stored(store, "1m")) == 144
    clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    assert store.apply_retention() == 144 and store.count() == 0
    assert len(stored(store, "1m")) == 144 and len(stored(store, "1d")) == 1
    store.close()


def test_replay_replacing_a_span_recomputes_its_buckets(tmp_path: Path) -> None:
    import pyarrow as pa

    store = make_store(tmp_path / "h.duckdb", [LONDON], Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = every_10_minutes("lon", start, start + timedelta(hours=2))
    first = table(rows)
    store.write(first.append_column("log_offset", pa.array([7] * first.num_rows, pa.int64())))
    store.refresh_rollups()
    fixed = table([(d, m, ts, v * 2) for d, m, ts, v in rows[:6]])  # the codec fix drops the rest
    store.replace_span(7, 7, fixed.append_column("log_offset", pa.array([7] * 6, pa.int64())))
    store.refresh_rollups()
    hours = stored(store, "1h")
    assert [(k[3], r["count"], r["sum"]) for k, r in hours.items()] == [(start, 6, 12.0)]
    assert [r["count"] for r in stored(store, "1d").values()] == [6]
    store.close()


def test_a_hot_store_without_rollups_gets_them_built(tmp_path: Path) -> None:
    from sensorlake.store.duckdb import DuckDBStore

    plain = DuckDBStore(tmp_path / "h.duckdb")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    plain.write(table(every_10_minutes("lon", start, start + timedelta(hours=3))))
    plain.close()
    store = make_store(tmp_path / "h.duckdb", [LONDON], Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    assert store.refresh_rollups().minutes == 18
    assert [r["count"] for r in stored(store, "1h").values()] == [6, 6, 6]
    store.close()
