"""Settings precedence and the time/duration parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sensorlake.config import describe_sources, load_settings
from sensorlake.errors import ConfigError, InputError
from sensorlake.timeparse import format_duration, parse_duration, parse_time


def test_precedence_flag_over_env_over_file_over_default(tmp_path, monkeypatch):
    config = tmp_path / "sensorlake.toml"
    config.write_text('default_tenant = "from-file"\n[http]\nport = 9100\n[worker]\n'
                      'batch_messages = 77\n')
    monkeypatch.setenv("SENSORLAKE_HTTP__PORT", "9200")
    settings = load_settings(config, data_dir=tmp_path / "d")
    assert settings.http.port == 9200
    assert settings.worker.batch_messages == 77
    assert settings.default_tenant == "from-file"
    sources = {name: origin for name, _, origin in
               describe_sources(settings, config, {"data_dir": tmp_path / "d"})}
    assert sources["http.port"] == "env SENSORLAKE_HTTP__PORT"
    assert sources["worker.batch_messages"].startswith("file ")
    assert sources["data_dir"] == "command line"
    assert sources["log.max_bytes"] == "default"


def test_bad_settings_name_the_problem(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_durations_and_times():
    assert parse_duration("1m") == timedelta(minutes=1)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert format_duration(timedelta(hours=1)) == "1h"
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_time("-24h", now) == now - timedelta(days=1)
    assert parse_time("2026-11-23T10:00:00", now) == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert parse_time("1795435200000", now) == now
    with pytest.raises(InputError, match="ISO 8601"):
        parse_time("yesterday-ish", now)
    with pytest.raises(InputError, match="like 30s"):
        parse_duration("5 minutes")


def test_a_tuned_service_process_exits_without_binding_leak_reports() -> None:
    """gc.freeze keeps objects alive through shutdown unless unfrozen at exit; DuckDB's
    nanobind bindings then print 'leaked instance' lines (seen at the end of the demo)."""
    import subprocess
    import sys

    code = ("import duckdb\nfrom sensorlake.tuning import tune_for_service\n"
            "c = duckdb.connect(); c.sql('select 1').fetchall()\ntune_for_service()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "leaked" not in done.stderr + done.stdout
