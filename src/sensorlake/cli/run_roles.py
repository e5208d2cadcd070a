"""`sensorlake run ingest`: MQTT ingest as a process of its own (registered on the `run`
group in cli/main.py): broker -> log, PUBACK after the durable append."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import typer

from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    console,
    friendly_errors,
    settings_from,
)
from sensorlake.config import Settings
from sensorlake.errors import ConfigError

UrlOption = Annotated[str | None, typer.Option(
    "--mqtt-url", envvar="SENSORLAKE_MQTT__URL", show_envvar=True,
    help="Broker to ingest from, e.g. mqtt://127.0.0.1:1883 (setting mqtt.url).")]
ClientIdOption = Annotated[str | None, typer.Option(
    "--client-id", envvar="SENSORLAKE_MQTT__CLIENT_ID", show_envvar=True,
    help="MQTT client id of this process; distinct per ingest process (mqtt.client_id).")]
SharedOption = Annotated[str | None, typer.Option(
    "--shared-group", envvar="SENSORLAKE_MQTT__SHARED_GROUP", show_envvar=True,
    help="Share the subscriptions with other ingest processes ($share/<group>/...).")]


def with_mqtt_options(settings: Settings, mqtt_url: str | None, client_id: str | None,
                      shared_group: str | None) -> Settings:
    """`settings` with the broker flags of `sensorlake run ingest` applied."""
    changes = {k: v for k, v in (("url", mqtt_url), ("client_id", client_id),
                                 ("shared_group", shared_group)) if v is not None}
    if changes:
        settings.mqtt = settings.mqtt.model_copy(update=changes)
    return settings


def ingest(mqtt_url: UrlOption = None, client_id: ClientIdOption = None,
           shared_group: SharedOption = None,
           seconds: Annotated[float, typer.Option(
               help="Stop by itself after this many seconds (0 = until Ctrl-C/SIGTERM).",
               min=0)] = 0,
           data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Ingest from the MQTT broker into the log until Ctrl-C (or SIGTERM)."""
    from sensorlake.ingest.mqtt import MqttIngest
    from sensorlake.log import open_log
    from sensorlake.tuning import tune_for_service

    with friendly_errors():
        settings = with_mqtt_options(settings_from(data_dir, config), mqtt_url, client_id,
                                     shared_group)
        if not settings.mqtt.url:
            raise ConfigError("no broker to ingest from: set [mqtt] url, "
                              "SENSORLAKE_MQTT__URL or --mqtt-url (e.g. mqtt://127.0.0.1:1883)")
        log_ = open_log(settings)
        ingest_ = MqttIngest(settings, log_)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    tune_for_service()
    ingest_.start()
    console.print(f"sensorlake ingest: {ingest_.broker} as {ingest_.client_id} -> "
                  f"{settings.data_dir.resolve()}; Ctrl-C stops it cleanly", highlight=False,
                  soft_wrap=True)
    started = time.monotonic()
    try:
        while not stop.wait(0.2):
            if seconds and time.monotonic() - started >= seconds:
                break
    finally:
        ingest_.stop()
        log_.close()
    counters = ingest_.counters
    console.print(f"received {counters.received:,} messages, stored {counters.stored:,} "
                  f"envelopes ({counters.duplicates:,} duplicates), acked {counters.acked:,}",
                  highlight=False, soft_wrap=True)
