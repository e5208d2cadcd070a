"""Tariffs: period boundaries in local time, weekdays and weekends, seasons, hours past
midnight, assignment precedence, grid factors, and bad files with errors that say where."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from sensorlake.config import load_settings
from sensorlake.errors import ConfigError
from sensorlake.tariffs import TariffBook, Tariffs, parse_tariffs, prices, tariffs_path

LONDON = ZoneInfo("Europe/London")
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tariffs.yaml"

BOOK = parse_tariffs("""
currency: GBP
co2e_kg_per_kwh: 0.2
tariffs:
  flat: {price: 0.25}
  tou:
    price: 0.10
    co2e_kg_per_kwh: 0.5
    periods:
      - {name: winter-peak, days: weekdays, months: nov-feb, hours: "17:00-21:00", price: 0.40}
      - {name: peak, days: mon-fri, hours: "17:00-21:00", price: 0.30}
      - {name: weekend, days: [sat, sun], price: 0.08}
  night:
    currency: EUR
    periods:
      - {hours: "22:00-06:00", price: 0.05}
      - {hours: "06:00-22:00", price: 0.20}
assign:
  default: flat
  tenants: {acme: tou}
  sites: {depot: night}
  devices: {m-7: flat}
""")


def price_at(book: TariffBook, tariff: str, local: list[datetime],
             tz: str = "Europe/London") -> list[float | None]:
    frame = pl.DataFrame({"ts": [t.astimezone(UTC) for t in local]},
                         schema={"ts": pl.Datetime("us", "UTC")}).with_columns(
        tz=pl.lit(tz), tariff=pl.lit(tariff))
    return prices(book, frame).to_list()


def london(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


def test_a_period_includes_its_start_and_excludes_its_end_in_local_time() -> None:
    # Wednesday 15 July 2026 (BST, UTC+1): 16:59:59 local is 15:59:59 UTC
    moments = [london(2026, 7, 15, 16, 59, 59), london(2026, 7, 15, 17, 0, 0),
               london(2026, 7, 15, 20, 59, 59), london(2026, 7, 15, 21, 0, 0)]
    assert price_at(BOOK, "tou", moments) == [0.10, 0.30, 0.30, 0.10]
    # the same UTC instants seen from UTC are an hour earlier: 16:00 UTC is not yet peak
    assert price_at(BOOK, "tou", [datetime(2026, 7, 15, 16, 0, tzinfo=UTC)], "UTC") == [0.10]


def test_weekdays_weekends_and_seasons() -> None:
    assert price_at(BOOK, "tou", [london(2026, 7, 18, 18, 0)]) == [0.08]   # Saturday
    assert price_at(BOOK, "tou", [london(2026, 7, 19, 3, 0)]) == [0.08]    # Sunday
    assert price_at(BOOK, "tou", [london(2026, 7, 17, 18, 0)]) == [0.30]   # Friday, summer
    assert price_at(BOOK, "tou", [london(2026, 1, 16, 18, 0)]) == [0.40]   # Friday, winter
    assert price_at(BOOK, "tou", [london(2026, 11, 2, 17, 0)]) == [0.40]   # nov-feb wraps
    assert price_at(BOOK, "tou", [london(2026, 3, 2, 17, 0)]) == [0.30]    # March: not winter


def test_hours_past_midnight_and_a_tariff_without_base_price() -> None:
    moments = [london(2026, 5, 4, 21, 59, 59), london(2026, 5, 4, 22, 0), london(2026, 5, 5, 0, 0),
               london(2026, 5, 5, 5, 59, 59), london(2026, 5, 5, 6, 0)]
    assert price_at(BOOK, "night", moments) == [0.20, 0.05, 0.05, 0.05, 0.20]


def test_the_lookup_is_one_vectorized_pass_over_many_zones_and_tariffs() -> None:
    instants = pl.datetime_range(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1,
                                 tzinfo=UTC), "1m", eager=True, time_zone="UTC")
    frame = pl.DataFrame({"ts": instants}).with_columns(
        tz=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("Europe/London"))
        .otherwise(pl.lit("America/New_York")), tariff=pl.lit("tou"))
    priced = prices(BOOK, frame)
    assert priced.len() == frame.height and priced.null_count() == 0
    assert set(priced.unique().to_list()) == {0.08, 0.10, 0.30, 0.40}


def test_assignment_precedence_tenant_site_device() -> None:
    assert BOOK.tariff_for("other", "x", {}) == "flat"                    # default
    assert BOOK.tariff_for("acme", "x", {}) == "tou"                      # tenant
    assert BOOK.tariff_for("acme", "x", {"site": "depot"}) == "night"     # site beats tenant
    assert BOOK.tariff_for("acme", "m-7", {"site": "depot"}) == "flat"    # device beats site
    assert BOOK.currency_of("night") == "EUR" and BOOK.currency_of("tou") == "GBP"


def test_grid_factor_tariff_then_file_then_setting() -> None:
    assert BOOK.co2e_of("tou", 0.9) == 0.5
    assert BOOK.co2e_of("flat", 0.9) == 0.2
    bare = parse_tariffs("currency: EUR\ntariffs: {flat: {price: 0.2}}")
    assert bare.co2e_of("flat", 0.9) == 0.9 and bare.co2e_of("flat", None) is None


def test_the_example_file_is_valid() -> None:
    book = parse_tariffs(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert book.tariffs["business-tou"].demand is not None


@pytest.mark.parametrize(("text", "expected"), [
    ("tariffs: {tou: {currency: GBP, periods: [{hours: '17-21', price: 0.3}], price: 0.1}}",
     "tariff 'tou', field periods[0].hours: '17' is not a time of day like 17:00"),
    ("tariffs: {tou: {currency: GBP, periods: [{days: funday, price: 0.3}], price: 0.1}}",
     "tariff 'tou', field periods[0].days: 'funday' is not a day"),
    ("tariffs: {tou: {currency: GBP, periods: [{months: 13, price: 0.3}], price: 0.1}}",
     "tariff 'tou', field periods[0].months: '13' is not a month"),
    ("tariffs: {tou: {currency: GBP, periods: [{hours: '06:00-22:00', price: 0.3}]}}",
     "tariff 'tou', field price: no price for Mon 00:00 in Jan"),
    ("tariffs: {tou: {price: 0.1}}", "tariff 'tou', field currency: missing"),
    ("tariffs: {tou: {currency: GBP, prise: 0.1}}", "tariff 'tou', field prise: Extra inputs"),
    ("tariffs: {tou: {currency: GBP, price: cheap}}", "tariff 'tou', field price: Input should"),
    ("currency: GBP\ntariffs: {t: {price: 1, demand: {price_per_kw: 5, interval: soon}}}",
     "tariff 't', field demand.interval: 'soon' is not a duration"),
    ("currency: GBP\ntariffs: {t: {price: 1}}\nassign: {sites: {north: nope}}",
     "assign.sites.north: unknown tariff 'nope' (tariffs: t)"),
    ("currency: GBP\ntariffs: {}", "field tariffs: Dictionary should have at least 1 item"),
    ("tariffs: [oops", "not valid YAML"),
    ("- 1\n- 2", "expected a mapping with a `tariffs:` section"),
])
def test_bad_files_name_the_file_tariff_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tariffs(text, "site/tariffs.yaml")
    message = str(caught.value)
    assert message.startswith("site/tariffs.yaml: ")
    assert expected in message, message


def test_file_location_setting_then_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert tariffs_path(settings) is None and Tariffs.from_settings(settings).book is None
    (tmp_path / "tariffs.yaml").write_text("currency: GBP\ntariffs: {a: {price: 1}}")
    assert tariffs_path(settings) == tmp_path / "tariffs.yaml"
    other = tmp_path / "other.yaml"
    chosen = load_settings(data_dir=tmp_path, energy={"tariffs_file": other,
                                                      "grid_co2e_kg_per_kwh": 0.3})
    with pytest.raises(ConfigError, match=r"other\.yaml does not exist"):
        Tariffs.from_settings(chosen)
    other.write_text("currency: GBP\ntariffs: {b: {price: 2}}")
    loaded = Tariffs.from_settings(chosen)
    assert loaded.book is not None and list(loaded.book.tariffs) == ["b"]
    assert loaded.grid_co2e_kg_per_kwh == 0.3
