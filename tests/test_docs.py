"""The user documentation is complete: a new setting, metric, command, option or route that
the docs do not mention fails here (in the spirit of Datasette's documentation tests).

Each test reads the code's own lists (the settings tree, METRICS, the typer app, the FastAPI
routes) and looks for them in docs/*.md, so the docs can only fall behind the code loudly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer

from sensorlake.api.app import create_app
from sensorlake.cli import app as cli_app
from sensorlake.config import ENV_PREFIX, describe_sources, load_settings
from sensorlake.model import METRICS, READING_SCHEMA, Quality

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HELP_OPTIONS = {"--help", "-h"}


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def table_row(text: str, first_cell: str) -> str | None:
    """The Markdown table line whose first cell is exactly `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and cells[0] == first_cell:
            return line
    return None


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def sections(text: str) -> dict[str, str]:
    """Heading text (without the #s) -> the text up to the next heading of any level."""
    out: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,6} ", line):
            if title is not None:
                out[title] = "\n".join(body)
            title, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def shown(value: Any) -> str:
    """A setting's value as `sensorlake config show` prints it."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


# -- README ----------------------------------------------------------------------------------


def test_readme_starts_with_make_demo_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```[^\n]*\n(.*?)```", readme, re.S)
    assert match, "README.md has no code block"
    lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    assert len(lines) >= 2, "README.md's first code block needs `make demo` and `make test`"
    assert lines[0].split("#")[0].strip() == "make demo", lines[0]
    assert lines[1].split("#")[0].strip() == "make test", lines[1]


# -- configuration.md ------------------------------------------------------------------------


def test_every_setting_is_documented(tmp_path: Path) -> None:
    """Each leaf setting has a row: `name`, its default as `config show` prints it, and its
    environment variable."""
    doc = read("configuration.md")
    names = [name for name, _, _ in describe_sources(load_settings(data_dir=tmp_path))]
    defaults = {name: value for name, value, _ in describe_sources(load_settings())}
    problems = []
    for name in names:
        row = table_row(doc, f"`{name}`")
        if row is None:
            problems.append(f"{name}: no table row starting with `{name}`")
            continue
        env = ENV_PREFIX + name.upper().replace(".", "__")
        if env not in row:
            problems.append(f"{name}: its environment variable {env} is not in its row")
        default = shown(defaults[name])
        if f"`{default}`".lower() not in row.lower():
            problems.append(f"{name}: its default `{default}` is not in its row")
    assert not problems, "docs/configuration.md is behind the settings:\n" + "\n".join(problems)


def test_configuration_toml_examples_load(tmp_path: Path) -> None:
    """Every ```toml example in configuration.md is a valid settings file."""
    blocks = re.findall(r"```toml\n(.*?)```", read("configuration.md"), re.S)
    assert blocks, "configuration.md has no TOML example"
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block, encoding="utf-8")
        load_settings(path)  # raises ConfigError naming the problem


# -- metrics.md ------------------------------------------------------------------------------


def _number(value: float) -> str:
    return format(Decimal(repr(float(value))).normalize(), "f")


def test_metric_catalog_is_documented_faithfully() -> None:
    doc = read("metrics.md")
    problems = []
    for metric in METRICS.values():
        row = table_row(doc, f"`{metric.name}`")
        if row is None:
            problems.append(f"{metric.name}: no row in the catalog table")
            continue
        expected = [f"`{metric.name}`", metric.unit, metric.kind.value, _number(metric.minimum),
                    _number(metric.maximum), _number(metric.precision),
                    "yes" if metric.derived else "no", metric.description]
        if cells(row) != expected:
            problems.append(f"{metric.name}: row {cells(row)} != model {expected}")
    assert not problems, "docs/metrics.md is behind model.METRICS:\n" + "\n".join(problems)


def test_quality_bits_and_reading_columns_are_documented() -> None:
    doc = read("metrics.md")
    for name, value in vars(Quality).items():
        if name.startswith("_"):
            continue
        row = table_row(doc, str(value.bit_length() - 1))
        assert row and f"`{name}`" in row and f"| {value} |" in row, (
            f"Quality.{name} = {value} has no row in the quality table of docs/metrics.md")
    for field in READING_SCHEMA:
        assert table_row(doc, f"`{field.name}`"), (
            f"reading column {field.name} is not in docs/metrics.md")


# -- cli.md ----------------------------------------------------------------------------------


def walk_commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk_commands(sub, (*path, name))


def option_names(command: Any) -> list[str]:
    return [name for param in command.params
            if getattr(param, "param_type_name", "") == "option"
            for name in (*param.opts, *param.secondary_opts) if name not in HELP_OPTIONS]


COMMANDS = list(walk_commands(typer.main.get_command(cli_app), ("sensorlake",)))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_and_option_is_documented(path: str, command: Any) -> None:
    """Each command has a heading `sensorlake ...` in cli.md whose section names each of its
    options (as `--option` in backticks)."""
    section = sections(read("cli.md")).get(f"`{path}`")
    assert section is not None, f"docs/cli.md has no heading `{path}`"
    missing = [name for name in option_names(command)
               if not re.search("`" + re.escape(name) + r"[ `]", section)]
    assert not missing, f"docs/cli.md, section `{path}`, does not name {missing}"


# -- api.md ----------------------------------------------------------------------------------


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every APIRoute, including those of included routers."""
    from fastapi.routing import APIRoute

    app = create_app(object())  # routes are registered at creation; the runtime is not used
    try:  # newer FastAPI keeps included routers lazily; this walks them
        from fastapi.routing import iter_route_contexts
        pairs = [(ctx.original_route, ctx.path) for ctx in iter_route_contexts(app.routes)]
    except ImportError:
        pairs = [(route, getattr(route, "path", None)) for route in app.routes]
    return sorted({(method, path) for route, path in pairs if isinstance(route, APIRoute)
                   for method in route.methods if method != "HEAD"})


ROUTES = api_routes()


def test_routes_were_found() -> None:
    assert ("POST", "/api/v1/ingest") in ROUTES, ROUTES


@pytest.mark.parametrize("method,path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_api_route_is_documented(method: str, path: str) -> None:
    doc = read("api.md")
    assert f"`{method} {path}`" in sections(doc), (
        f"docs/api.md has no heading `{method} {path}`")


def test_api_status_codes_are_documented() -> None:
    doc = read("api.md")
    for code in (200, 400, 401, 403, 404, 413, 422, 503):
        assert table_row(doc, f"`{code}`"), f"status {code} has no row in docs/api.md"
    assert "Retry-After" in doc


# -- links between the docs ------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("name", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_between_docs_resolve(name: str) -> None:
    text = read(name)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (DOCS / file) if file else DOCS / name
        if not path.resolve().exists():
            broken.append(f"{target}: no file {path}")
            continue
        if anchor and path.suffix == ".md":
            anchors = {slug(title) for title in sections(path.read_text(encoding="utf-8"))}
            if anchor not in anchors:
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"docs/{name} has broken links:\n" + "\n".join(broken)
