"""`sensorlake edge`: the edge agent (stdin -> outbox -> sensorlake) and `edge status`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sensorlake.cli.common import (
    ConfigOption,
    FormatOption,
    OutputFormat,
    err_console,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.errors import ConfigError

app = typer.Typer(help="The edge agent: a durable outbox on the device, uploaded until "
                  "sensorlake's watermark confirms each reading.", invoke_without_command=True,
                  no_args_is_help=False)

OutboxOption = Annotated[Path | None, typer.Option(
    "--outbox", envvar="SENSORLAKE_EDGE__OUTBOX", show_envvar=True,
    help="Outbox file (SQLite; setting edge.outbox, default ./sensorlake-outbox.db).")]


@app.callback()
def edge(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help="The device id this agent sends as.")]
    = None,
    token: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_EDGE_TOKEN", show_envvar=True,
        help="The device's ingest token (HTTP bearer token and MQTT password).")] = None,
    target: Annotated[str | None, typer.Option(
        help="mqtt://host:1883 or http://host:8750 (sensorlake or its broker).")] = None,
    outbox: OutboxOption = None,
    max_bytes: Annotated[int | None, typer.Option(
        envvar="SENSORLAKE_EDGE__MAX_BYTES", show_envvar=True,
        help="Outbox size cap in bytes (edge.max_bytes).")] = None,
    when_full: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_EDGE__WHEN_FULL", show_envvar=True,
        help="reject (wait, and say so) or drop-oldest (counted) (edge.when_full).")] = None,
    input_file: Annotated[Path | None, typer.Option(
        "--input", help="Read lines from this file instead of stdin.")] = None,
    simulate: Annotated[str | None, typer.Option(
        help="Instead of reading input, simulate a device of this type (a built-in name or "
        "a YAML/JSON file, see `sensorlake simulate types`).")] = None,
    rate: Annotated[float | None, typer.Option(
        help="With --simulate: reading sets per second (default: the type's interval).",
        min=0.001)] = None,
    seconds: Annotated[float, typer.Option(
        help="Stop after this many seconds (0 = when the input ended and all is confirmed).",
        min=0)] = 0,
    config: ConfigOption = None,
) -> None:
    """Read reading sets from stdin (JSON or CSV lines) into the outbox and upload them.

    Each line is one reading set: JSON {"ts": ..., "readings": {...}} (or flat metric
    fields), or CSV with a header row (an optional ts column, then metrics). The outbox
    keeps every set until sensorlake's watermark covers it, across restarts and kill -9.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sensorlake.edge.agent import EdgeAgent
    from sensorlake.edge.outbox import Outbox
    from sensorlake.edge.transport import open_transport
    from sensorlake.edge.uploader import Uploader

    with friendly_errors():
        overrides = {k: v for k, v in (("outbox", outbox), ("max_bytes", max_bytes),
                                       ("when_full", when_full)) if v is not None}
        settings = settings_from(None, config, **({"edge": overrides} if overrides else {}))
        if not (device and token and target):
            raise ConfigError("the agent needs --device, --token and --target (see "
                              "`sensorlake edge --help`), or use `sensorlake edge status`")
        box = Outbox(settings.edge.outbox, settings.edge.max_bytes, settings.edge.when_full)
        transport = open_transport(target, device, token)
        agent = EdgeAgent(box, device, Uploader(box, device, transport, settings.edge))
    agent.start()
    import threading
    import time
    started = time.monotonic()
    if simulate:
        feeder = threading.Thread(target=agent.simulate, args=(simulate, rate), daemon=True)
    else:
        source = input_file.open() if input_file else sys.stdin
        feeder = threading.Thread(target=agent.feed, args=(source,), daemon=True)
    feeder.start()
    try:
        while True:
            if seconds and time.monotonic() - started >= seconds:
                break
            if not seconds and not feeder.is_alive() and agent.uploader.idle:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
        transport.close()
        status = box.status()
        box.close()
    for problem in agent.reader.errors[:20]:
        err_console.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)
    mine = next((s for s in status if s["device"] == device), None)
    err_console.print(f"appended {agent.appended:,} reading sets; backlog "
                      f"{mine['backlog'] if mine else 0:,}, watermark "
                      f"{mine['watermark'] if mine else 0}, dropped "
                      f"{mine['dropped'] if mine else 0:,}", highlight=False)


@app.command("status")
def status(outbox: OutboxOption = None, fmt: FormatOption = OutputFormat.table,
           config: ConfigOption = None) -> None:
    """Backlog, oldest unconfirmed reading, last acknowledgement and drops per device."""
    from sensorlake.edge.outbox import Outbox

    with friendly_errors():
        settings = settings_from(None, config, **({"edge": {"outbox": outbox}} if outbox
                                                 else {}))
        path = settings.edge.outbox
        if not path.exists():
            raise ConfigError(f"no outbox at {path}: pass --outbox FILE")
        with Outbox(path, settings.edge.max_bytes) as box:
            rows = box.status()
        render(rows, ["device", "backlog", "pending", "unconfirmed_messages",
                      "oldest_age_seconds", "watermark", "last_ack_age_seconds", "appended",
                      "confirmed", "dropped", "dropped_readings", "bytes"], fmt)
