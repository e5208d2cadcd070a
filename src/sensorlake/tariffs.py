"""Tariffs as data: `tariffs.yaml` read into pydantic models, assigned to devices, and a
vectorized price lookup (UTC timestamps → local weekday, month, minute → price per kWh).

A tariff has a base `price` (per kWh, any time no period matches) and/or `periods`, tried in
file order, the first match wins. A period matches on local `days` (weekdays, weekends, mon-fri,
[sat, sun] ...), `months` (a season: "6-9", "nov-feb", [12, 1, 2]) and `hours` ("17:00-21:00",
start included, end excluded; "22:00-06:00" wraps past midnight). Optional: `demand` (a monthly
charge per peak kW over `interval`), `currency`, `co2e_kg_per_kwh`. Assignment: `assign.default`
< `assign.tenants` < `assign.sites` (device tag `site`) < `assign.devices`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sensorlake.errors import ConfigError, InputError
from sensorlake.timeparse import parse_duration

if TYPE_CHECKING:
    from sensorlake.config import Settings

SITE_TAG = "site"
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
DAY_WORDS = {"all": range(1, 8), "weekdays": range(1, 6), "weekday": range(1, 6),
             "weekends": range(6, 8), "weekend": range(6, 8)}
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cyclic(first: int, last: int, size: int) -> list[int]:
    """first..last inclusive on a cycle 1..size (nov-feb = 11, 12, 1, 2)."""
    return [(first - 1 + i) % size + 1 for i in range((last - first) % size + 1)]


def _named(item: Any, names: tuple[str, ...], what: str) -> int:
    text = str(item).strip().lower()
    if text.isdigit() and 1 <= int(text) <= len(names):
        return int(text)
    if text[:3] in names:
        return names.index(text[:3]) + 1
    raise ValueError(f"'{item}' is not a {what}: use {', '.join(names)} or 1-{len(names)}")


def _parse_set(value: Any, names: tuple[str, ...], what: str,
               words: dict[str, range]) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if text in words:
            out.update(words[text])
        elif "-" in text:
            first, _, last = text.partition("-")
            out.update(_cyclic(_named(first, names, what), _named(last, names, what),
                               len(names)))
        else:
            out.add(_named(item, names, what))
    if not out:
        raise ValueError(f"no {what} given")
    return tuple(sorted(out))


def _minute(text: str, *, end: bool) -> int:
    match = _CLOCK.match(text.strip())
    if not match or int(match.group(2)) > 59:
        raise ValueError(f"'{text}' is not a time of day like 17:00")
    minute = int(match.group(1)) * 60 + int(match.group(2))
    if minute > 1440 or (minute == 1440 and not end):
        raise ValueError(f"'{text}' is past 24:00 (24:00 only ends a range)")
    return minute


def parse_hours(value: Any) -> tuple[tuple[int, int], ...]:
    """'17:00-21:00' (or a list of them) → minute ranges [start, end); wraps past midnight."""
    items = value if isinstance(value, list) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        first, sep, last = str(item).partition("-")
        if not sep:
            raise ValueError(f"'{item}' is not an hour range like 17:00-21:00")
        start, stop = _minute(first, end=False), _minute(last, end=True)
        if start == stop:
            raise ValueError(f"'{item}' is empty: start and end are equal")
        ranges += [(start, stop)] if start < stop else [(start, 1440), (0, stop)]
    return tuple(r for r in ranges if r[0] < r[1])


class Period(_Model):
    """A time-of-use period: a price that applies on some days, months and hours."""

    name: str = ""
    price: float = Field(allow_inf_nan=False, description="Per kWh (may be negative).")
    days: tuple[int, ...] = Field(tuple(range(1, 8)), description="ISO weekdays, 1 = Monday.")
    months: tuple[int, ...] = tuple(range(1, 13))
    hours: tuple[tuple[int, int], ...] = ((0, 1440),)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> tuple[int, ...]:
        return _parse_set(value, DAY_NAMES, "day", DAY_WORDS)

    @field_validator("months", mode="before")
    @classmethod
    def _months(cls, value: Any) -> tuple[int, ...]:
        return _parse_set(value, MONTH_NAMES, "month", {"all": range(1, 13)})

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, value: Any) -> tuple[tuple[int, int], ...]:
        return parse_hours(value)


class Demand(_Model):
    """A monthly demand charge: price per kW of the month's highest interval average."""

    price_per_kw: float = Field(ge=0, allow_inf_nan=False)
    interval: timedelta = Field(timedelta(minutes=15), description="Demand interval, e.g. 15m.")

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except InputError as exc:
            raise ValueError(str(exc)) from None


class Tariff(_Model):
    description: str = ""
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")
    price: float | None = Field(None, allow_inf_nan=False,
                                description="Per kWh when no period matches.")
    periods: tuple[Period, ...] = ()
    demand: Demand | None = None
    co2e_kg_per_kwh: float | None = Field(None, ge=0, allow_inf_nan=False)


class Assignment(_Model):
    default: str | None = None
    tenants: dict[str, str] = Field(default_factory=dict)
    sites: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, str] = Field(default_factory=dict)


class TariffBook(_Model):
    """The whole tariffs.yaml."""

    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$",
                                 description="Currency of tariffs that name none.")
    co2e_kg_per_kwh: float | None = Field(None, ge=0, allow_inf_nan=False)
    tariffs: dict[str, Tariff] = Field(min_length=1)
    assign: Assignment = Assignment()

    @model_validator(mode="after")
    def _consistent(self) -> TariffBook:
        problems = []
        for name, tariff in self.tariffs.items():
            if tariff.currency is None and self.currency is None:
                problems.append(f"tariff '{name}', field currency: missing; set it on the "
                                "tariff or at the top of the file (e.g. currency: EUR)")
            if tariff.price is None:
                hole = uncovered(tariff)
                if hole:
                    problems.append(f"tariff '{name}', field price: no price for {hole}; add "
                                    "a base `price` or a period covering it")
        names = ", ".join(sorted(self.tariffs))
        where = [("default", {"default": self.assign.default} if self.assign.default else {}),
                 ("tenants", self.assign.tenants), ("sites", self.assign.sites),
                 ("devices", self.assign.devices)]
        for section, mapping in where:
            for key, tariff_name in mapping.items():
                if tariff_name not in self.tariffs:
                    problems.append(f"assign.{section}.{key}: unknown tariff '{tariff_name}' "
                                    f"(tariffs: {names})")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def currency_of(self, name: str) -> str:
        return self.tariffs[name].currency or self.currency or ""

    def co2e_of(self, name: str | None, default: float | None) -> float | None:
        """Grid factor: the tariff's, else the file's, else the setting's."""
        tariff = self.tariffs.get(name) if name else None
        for factor in (tariff.co2e_kg_per_kwh if tariff else None, self.co2e_kg_per_kwh):
            if factor is not None:
                return factor
        return default

    def tariff_for(self, tenant: str, device_id: str, tags: dict[str, str]) -> str | None:
        """Most specific wins: device, then site tag, then tenant, then default."""
        assign = self.assign
        site = tags.get(SITE_TAG)
        for found in (assign.devices.get(device_id), assign.sites.get(site) if site else None,
                      assign.tenants.get(tenant), assign.default):
            if found is not None:
                return found
        return None


def period_condition(period: Period, weekday: pl.Expr, month: pl.Expr,
                     minute: pl.Expr) -> pl.Expr:
    """Where a period applies, on local weekday (1-7), month (1-12), minute of day."""
    hours = [(minute >= start) & (minute < stop) for start, stop in period.hours]
    in_hours = pl.any_horizontal(hours) if len(hours) > 1 else hours[0]
    return weekday.is_in(list(period.days)) & month.is_in(list(period.months)) & in_hours


def price_expr(book: TariffBook, tariff: str = "tariff", weekday: str = "weekday",
               month: str = "month", minute: str = "minute") -> pl.Expr:
    """Price per kWh for rows carrying a tariff name and local calendar fields (null where
    the tariff is null or no period matches and the tariff has no base price)."""
    w, m, t = pl.col(weekday), pl.col(month), pl.col(minute)
    chain: Any = None
    for name, spec in book.tariffs.items():
        cases = [(period_condition(p, w, m, t), p.price) for p in spec.periods]
        if spec.price is not None:
            cases.append((pl.lit(True), spec.price))
        for condition, value in cases:
            test = (pl.col(tariff) == name) & condition
            chain = pl.when(test).then(pl.lit(value, pl.Float64)) if chain is None else \
                chain.when(test).then(pl.lit(value, pl.Float64))
    return pl.lit(None, pl.Float64) if chain is None else chain.otherwise(None)


def local_fields(frame: pl.DataFrame, ts: str = "ts", zone: str = "tz") -> pl.DataFrame:
    """Add weekday (1 = Monday), month and minute of day in each row's local zone."""
    parts = []
    for (tz,), part in frame.partition_by(zone, as_dict=True, maintain_order=True).items():
        local = pl.col(ts).dt.convert_time_zone(str(tz))
        parts.append(part.with_columns(
            local.dt.weekday().cast(pl.Int8).alias("weekday"),
            local.dt.month().cast(pl.Int8).alias("month"),
            (local.dt.hour().cast(pl.Int16) * 60 + local.dt.minute()).alias("minute")))
    if not parts:
        return frame.with_columns(pl.lit(None, pl.Int8).alias("weekday"),
                                  pl.lit(None, pl.Int8).alias("month"),
                                  pl.lit(None, pl.Int16).alias("minute"))
    return pl.concat(parts)


def prices(book: TariffBook, frame: pl.DataFrame, ts: str = "ts", zone: str = "tz",
           tariff: str = "tariff") -> pl.Series:
    """Price per kWh at each row's instant, in its zone, under its tariff (order kept)."""
    indexed = frame.with_row_index("_row")
    priced = local_fields(indexed, ts, zone).with_columns(price_expr(book, tariff).alias(
        "price")).sort("_row")
    return priced.get_column("price")


def uncovered(tariff: Tariff) -> str | None:
    """A local time no period of a price-less tariff covers ('Sun 03:00 in Jan'), else None."""
    grid = pl.DataFrame({"weekday": range(1, 8)}).join(
        pl.DataFrame({"month": range(1, 13)}), how="cross").join(
        pl.DataFrame({"minute": range(1440)}), how="cross").with_columns(
        tariff=pl.lit("t"))
    book = TariffBook.model_construct(tariffs={"t": tariff}, currency=None,
                                      co2e_kg_per_kwh=None, assign=Assignment())
    holes = grid.with_columns(price_expr(book).alias("price")).filter(pl.col("price").is_null())
    if holes.is_empty():
        return None
    first = holes.row(0, named=True)
    return (f"{DAY_NAMES[first['weekday'] - 1].title()} {first['minute'] // 60:02d}:"
            f"{first['minute'] % 60:02d} in {MONTH_NAMES[first['month'] - 1].title()}")


def _location(loc: tuple[Any, ...]) -> str:
    """('tariffs', 'tou', 'periods', 0, 'hours') → "tariff 'tou', field periods[0].hours"."""
    parts = list(loc)
    head = ""
    if len(parts) >= 2 and parts[0] == "tariffs":
        head, parts = f"tariff '{parts[1]}', ", parts[2:]
    field = ""
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return f"{head}field {field or '(top level)'}"


def parse_tariffs(text: str, source: str = "tariffs.yaml") -> TariffBook:
    """A TariffBook from YAML text; ConfigError naming the file, tariff and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a `tariffs:` section")
    try:
        return TariffBook.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                lines.append(f"{_location(error['loc'])}: {message} (got {error['input']!r})"
                             if error["type"] != "missing" else
                             f"{_location(error['loc'])}: required")
            else:
                lines.extend(message.split("\n"))
        raise ConfigError(f"{source}: " + "\n  ".join(["invalid tariffs:", *lines])) from None


def load_tariffs(path: Path) -> TariffBook:
    """Read and validate a tariffs file (cached until the file changes)."""
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(f"tariffs file {path} does not exist: create it (see "
                          "docs/metrics.md#tariffs) or fix energy.tariffs_file") from None
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int, _size: int) -> TariffBook:
    return parse_tariffs(Path(path).read_text(encoding="utf-8"), path)


def tariffs_path(settings: Settings) -> Path | None:
    """`energy.tariffs_file`, else `<data_dir>/tariffs.yaml` when present, else None."""
    if settings.energy.tariffs_file is not None:
        return settings.energy.tariffs_file
    default = settings.path("tariffs.yaml")
    return default if default.exists() else None


@dataclass(frozen=True)
class Tariffs:
    """The book in force (None without a file) with the settings' grid factor."""

    book: TariffBook | None
    grid_co2e_kg_per_kwh: float | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Tariffs:
        path = tariffs_path(settings)
        return cls(load_tariffs(path) if path else None,
                   settings.energy.grid_co2e_kg_per_kwh)
