"""`sensorlake mosquitto-config`: the broker's config, passwords and ACL from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    TenantOption,
    console,
    err_console,
    friendly_errors,
    settings_from,
)
from sensorlake.ingest.mosquitto_config import BrokerOptions, generate, reload_broker
from sensorlake.runtime import open_catalog


def mosquitto_config(
    out: Annotated[Path, typer.Option("--out", help="Folder for mosquitto.conf, passwords, "
                                      "acl and the broker's persistence.")],
    port: Annotated[int, typer.Option(help="Port the broker listens on.")] = 1883,
    bind: Annotated[str, typer.Option(help="Address the broker listens on.")] = "127.0.0.1",
    max_queued_bytes: Annotated[int, typer.Option(
        help="Per-client queue cap in bytes (messages are never capped by count).")]
    = 256 << 20,
    max_packet_size: Annotated[int, typer.Option(help="Largest MQTT packet accepted.")]
    = 1 << 20,
    broker_user: Annotated[str | None, typer.Option(
        help="User mosquitto runs as (when started as root); the files are handed to it.")]
    = None,
    line: Annotated[list[str] | None, typer.Option(
        "--line", help="A config line appended verbatim, e.g. 'listener 8883 0.0.0.0' and "
        "its certfile/keyfile (repeatable).")] = None,
    reload: Annotated[bool, typer.Option(
        "--reload", help="After writing, SIGHUP the broker (pid file in --out, or "
        "--pid-file) so it re-reads passwords and ACL.")] = False,
    pid_file: Annotated[Path | None, typer.Option(
        help="Pid file of the running broker (default OUT/mosquitto.pid).")] = None,
    reload_command: Annotated[str | None, typer.Option(
        help="Command that reloads the broker instead of SIGHUP, e.g. "
        "'systemctl reload mosquitto'.")] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Write a Mosquitto 2.0 config, password file and ACL for the tenant's devices.

    Each registered device with an active device-bound ingest token is a broker user
    (username = device id, password = its newest token). Run it again after adding or
    revoking a device or token: the files are replaced atomically; --reload applies them.
    """
    with friendly_errors():
        settings = settings_from(data_dir, config)
        catalog = open_catalog(settings)
        try:
            done = generate(settings, catalog, out, tenant or settings.default_tenant,
                            BrokerOptions(port=port, bind=bind,
                                          max_queued_bytes=max_queued_bytes,
                                          max_packet_size=max_packet_size, user=broker_user,
                                          extra=list(line or [])))
        finally:
            catalog.close()
        console.print(f"wrote {done.config} ({len(done.devices)} devices, ingest user "
                      f"{settings.mqtt.username})", highlight=False, soft_wrap=True)
        for line in done.skipped:
            err_console.print(f"[yellow]skipped[/yellow] {line}", highlight=False, soft_wrap=True)
        if reload or reload_command:
            console.print(reload_broker(pid_file or done.out / "mosquitto.pid", reload_command))
        else:
            console.print(f"start it with: mosquitto -c {done.config}   (after a change: "
                          "add --reload)", highlight=False, soft_wrap=True)
