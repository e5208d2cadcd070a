"""`sensorlake` and its sub-commands."""

from __future__ import annotations

import logging

import typer

from sensorlake import __version__
from sensorlake.cli import (
    access,
    cost,
    devices,
    edge,
    jobs,
    mosquitto,
    query,
    roles,
    run,
    simulate,
    status,
    tariffs,
    tokens,
)
from sensorlake.cli import poll as poll_cli
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.config import describe_sources

app = typer.Typer(
    name="sensorlake", no_args_is_help=True, rich_markup_mode="rich",
    help="Sensor readings from devices to dashboards and a Parquet lake: zero loss, no "
    "duplicates. Start with [bold]sensorlake demo[/bold].",
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(devices.app, name="devices")
app.add_typer(tokens.app, name="tokens")
app.add_typer(access.users_app, name="users")
app.add_typer(access.grants_app, name="grants")
app.add_typer(query.quarantine_app, name="quarantine")
app.add_typer(poll_cli.app, name="poll")
app.command("query")(query.query)
app.command("up")(run.up)
app.command("demo")(run.demo)
app.command("cost")(cost.cost)
app.command("status")(status.status)
app.command("replay")(jobs.replay)
app.add_typer(jobs.app, name="jobs")
run_app = roles.run_app  # ingest, worker, api (cli/roles.py) and the scheduler
app.add_typer(run_app, name="run")
run_app.command("scheduler")(jobs.run_scheduler)
run_app.command("ingest")(roles.ingest)  # MQTT (cli/run_roles.py) or, with the server
#                                           profile, HTTP -> JetStream (cli/roles.py)
app.command("mosquitto-config")(mosquitto.mosquitto_config)
app.add_typer(edge.app, name="edge")
app.add_typer(simulate.app, name="simulate")
app.add_typer(tariffs.app, name="tariffs")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sensorlake {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@config_app.command("show")
def config_show(data_dir: DataDirOption = None, config: ConfigOption = None,
                fmt: FormatOption = OutputFormat.table) -> None:
    """Print every setting, its value and where it came from (default, file, env, flag)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        rows = [{"setting": name, "value": value if not hasattr(value, "__fspath__")
                 else str(value), "source": origin}
                for name, value, origin in describe_sources(
                    settings, config, {"data_dir": data_dir})]
        render(rows, ["setting", "value", "source"], fmt)
