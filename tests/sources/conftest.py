"""Fixtures for the source tests (helpers are in sources_support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sources_support import Api, CodecSetup

from sensorlake.config import Settings, load_settings
from sensorlake.decode.context import DeviceInfo, configure_codecs, reset_codecs
from sensorlake.decode.python_codec import close_python_codecs
from sensorlake.runtime import Runtime


@pytest.fixture(autouse=True)
def _fresh_codecs() -> Iterator[None]:
    reset_codecs()
    yield
    reset_codecs()


@pytest.fixture(scope="session", autouse=True)
def _stop_codec_child() -> Iterator[None]:
    yield
    close_python_codecs()


@pytest.fixture
def codecs(tmp_path: Path) -> CodecSetup:
    """Configure the codecs: settings overrides and {device: (type, tags)} of the registry."""

    def setup(devices: dict[str, tuple[str, dict[str, str]]] | None = None,
              **overrides: Any) -> Settings:
        settings = load_settings(data_dir=tmp_path / "codec-data", **overrides)
        known = {("t1", d): DeviceInfo(t, tags) for d, (t, tags) in (devices or {}).items()}
        configure_codecs(settings, lambda pairs: {p: known[p] for p in pairs if p in known})
        return settings

    return setup


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    runtimes: list[Runtime] = []

    def build(start_worker: bool = True, **overrides: Any) -> Api:
        worker = {"lake_flush_seconds": 0.2, "poll_seconds": 0.05, "linger_seconds": 0,
                  **overrides.pop("worker", {})}
        settings = load_settings(data_dir=tmp_path / f"data{len(runtimes)}", worker=worker,
                                 **overrides)
        runtime = Runtime(settings)
        runtimes.append(runtime)
        if start_worker:
            runtime.start_worker()
        return Api(runtime)

    yield build
    for runtime in runtimes:
        runtime.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
