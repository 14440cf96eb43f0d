"""The `traket` command: `serve` the local ingest, `report` margins, list `events`."""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click
from rich.console import Console

from traket._errors import ConfigurationError
from traket._local._report import (
    Filters,
    PricedEvent,
    build_report,
    load_revenue_csv,
    parse_revenue_pairs,
    price_events,
)
from traket._local._store import EventStore
from traket._pricing import PRICE_FILE_ENV, CostEngine

if TYPE_CHECKING:
    from traket._local._server import IngestServer

F = TypeVar("F", bound=Callable[..., Any])

DB_ENV = "TRAKET_DB"
DEFAULT_DB = "traket.sqlite3"
WRITE_KEY_ENV = "TRAKET_WRITE_KEY"
DEFAULT_WRITE_KEY = "local-dev-key"

_DATE = click.DateTime(formats=["%Y-%m-%d"])
_SECTIONS = (
    "customers",
    "features",
    "customer_features",
    "models",
    "days",
    "tokens",
    "data_quality",
)
# The flag of each setting `run_server` can refuse (`SetupError.option`).
_SERVE_FLAGS = {
    "db": "--db",
    "host": "--host",
    "port": "--port",
    "write_key": "--write-key",
}


class _EchoWarnings(logging.Handler):
    """Show the library's warnings on stderr: its logger only has a NullHandler."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"traket: warning: {record.getMessage()}", err=True)
        except Exception:
            self.handleError(record)


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Route `traket` warnings to the terminal for the length of one command."""
    handler = _EchoWarnings()
    package_logger = logging.getLogger("traket")
    package_logger.addHandler(handler)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)


def _db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=lambda: os.environ.get(DB_ENV) or DEFAULT_DB,
        show_default=f"${DB_ENV} or {DEFAULT_DB}",
        help="The local ingest's SQLite database.",
    )(fn)


def _filter_options(fn: F) -> F:
    for option in reversed(
        (
            click.option("--since", type=_DATE, help="First day, YYYY-MM-DD (UTC)."),
            click.option(
                "--until", type=_DATE, help="Last day, YYYY-MM-DD, included (UTC)."
            ),
            click.option("--customer", help="Only this customer (your own id)."),
            click.option("--feature", help="Only this product feature."),
            click.option("--environment", help="Only this environment."),
            click.option(
                "--prices",
                "price_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=lambda: os.environ.get(PRICE_FILE_ENV) or None,
                help=f"Price overrides file, TOML or JSON (default ${PRICE_FILE_ENV}).",
            ),
            click.option(
                "--output",
                "-o",
                type=click.Path(dir_okay=False, writable=True, path_type=Path),
                help="Write to this file instead of the terminal.",
            ),
        )
    ):
        fn = option(fn)
    return fn


@click.group()
@click.version_option(package_name="traket-sdk", prog_name="traket")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Meter AI usage locally and see cost and margin per customer and feature."""
    ctx.with_resource(_warnings_to_stderr())


@main.command()
@_db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Bind address; 0.0.0.0 or :: listens on every interface.",
)
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port; 0 picks a free one.",
)
@click.option(
    "--write-key",
    default=lambda: os.environ.get(WRITE_KEY_ENV) or DEFAULT_WRITE_KEY,
    show_default=f"${WRITE_KEY_ENV} or {DEFAULT_WRITE_KEY}",
    help="The write key senders must present.",
)
def serve(db_path: Path, host: str, port: int, write_key: str) -> None:
    """Run the local ingest until Ctrl-C, storing events in the database."""
    from traket._local._server import SetupError, run_server

    def ready(server: IngestServer) -> None:
        _banner(server, db_path)

    try:
        run_server(db_path, host=host, port=port, write_key=write_key, on_ready=ready)
    except SetupError as exc:
        flag = _SERVE_FLAGS.get(exc.option, exc.option)
        raise click.BadParameter(exc.problem, param_hint=flag) from exc


def _banner(server: IngestServer, db_path: Path) -> None:
    """Say where the ingest listens and which endpoint the SDK should be given."""
    click.echo(
        f"traket: local ingest listening on {server.bound_url} (database {db_path})"
    )
    click.echo(f"traket: point the SDK at it with TRAKET_ENDPOINT={server.url}")
    if server.loopback:
        return
    # Bound to every interface, `url` is the loopback address: right here only.
    elsewhere = ""
    if server.bound_url != server.url:
        elsewhere = "use this machine's address in place of the loopback one, and "
    click.echo(
        f"traket: from other machines, {elsewhere}pass allow_insecure_http=True "
        "to the SDK"
    )


@main.command()
@_db_option
@_filter_options
@click.option(
    "--revenue",
    multiple=True,
    metavar="FILE.csv | CUSTOMER=AMOUNT",
    help="Revenue per customer for margins: a CSV with columns customer,amount, "
    "or CUSTOMER=AMOUNT (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "--section",
    type=click.Choice(_SECTIONS),
    help="The section written by --format csv (default customers); the other "
    "formats show every section.",
)
def report(
    db_path: Path,
    since: datetime | None,
    until: datetime | None,
    customer: str | None,
    feature: str | None,
    environment: str | None,
    price_file: Path | None,
    output: Path | None,
    revenue: Sequence[str],
    fmt: str,
    section: str | None,
) -> None:
    """Show cost, and margin when revenue is given, per customer, feature and model."""
    from traket._local._html import render_html
    from traket._local._render import render_csv, render_json, render_table

    if section is not None and fmt != "csv":
        raise click.UsageError(
            f"--section picks the one section --format csv writes; --format {fmt} "
            "shows every section: drop --section, or add --format csv"
        )
    filters = _filters(since, until, customer, feature, environment)
    engine = _engine(price_file)
    revenue_map = _revenue(revenue)
    with _store(db_path) as store:
        result = build_report(
            store.events(**filters.store_kwargs()),
            engine=engine,
            revenue=revenue_map,
            filters=filters,
        )

    if fmt == "table":
        _print_table(output, lambda console: render_table(result, console))
        return
    if fmt == "csv":
        text = render_csv(result, section or "customers")
    elif fmt == "json":
        text = render_json(result)
    else:
        text = render_html(result)
    _write(output, text)


@main.command()
@_db_option
@_filter_options
@click.option("--model", help="Only events whose served or requested model is this.")
@click.option("--unpriced", is_flag=True, help="Only events without a cost.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Rows."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def events(
    db_path: Path,
    since: datetime | None,
    until: datetime | None,
    customer: str | None,
    feature: str | None,
    environment: str | None,
    price_file: Path | None,
    output: Path | None,
    model: str | None,
    unpriced: bool,
    limit: int,
    fmt: str,
) -> None:
    """List single events with their ids, tokens and cost components, newest last."""
    from traket._local._render import event_rows, render_events

    filters = _filters(since, until, customer, feature, environment)
    engine = _engine(price_file)
    with _store(db_path) as store:
        # A limit past what a deque can hold means every event.
        picked: deque[PricedEvent] = deque(maxlen=min(limit, sys.maxsize))
        for item in price_events(store.events(**filters.store_kwargs()), engine):
            if model and model not in (item.served_model, item.requested_model):
                continue
            if unpriced and item.cost.amount is not None:
                continue
            picked.append(item)
        rows = event_rows(picked)

    if fmt == "table":
        _print_table(output, lambda console: render_events(rows, fmt, console))
        return
    _write(output, render_events(rows, fmt, Console()))


def _filters(
    since: datetime | None,
    until: datetime | None,
    customer: str | None,
    feature: str | None,
    environment: str | None,
) -> Filters:
    if since and until and until < since:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    return Filters(
        since=since.date() if since else None,
        until=until.date() if until else None,
        customer=customer,
        feature=feature,
        environment=environment,
    )


def _engine(price_file: Path | None) -> CostEngine:
    try:
        return CostEngine(price_file=price_file)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--prices") from exc
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"price file {str(price_file)!r}: expected UTF-8 text, received bytes "
            "that are not UTF-8",
            param_hint="--prices",
        ) from exc


def _revenue(values: Sequence[str]) -> dict[str, Decimal]:
    revenue: dict[str, Decimal] = {}
    try:
        for value in values:
            if "=" in value and not Path(value).is_file():
                parsed = parse_revenue_pairs([value])
            else:
                parsed = load_revenue_csv(value)
            for name, amount in parsed.items():
                revenue[name] = revenue.get(name, Decimal(0)) + amount
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--revenue") from exc
    return revenue


@contextmanager
def _store(db_path: Path) -> Iterator[EventStore]:
    if not db_path.is_file():
        raise click.ClickException(
            f"no database at {db_path}: run `traket serve` first, or pass --db "
            f"(or set ${DB_ENV})"
        )
    from traket._local._server import SetupError, open_store

    try:
        store = open_store(db_path)
    except SetupError as exc:
        raise click.BadParameter(exc.problem, param_hint="--db") from exc
    with store:
        yield store


def _print_table(output: Path | None, draw: Callable[[Console], object]) -> None:
    if output is None:
        # Piped (not a terminal, no $COLUMNS): wide enough for model names.
        wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
        draw(Console(width=120 if wide else None))
        return
    with _writing(output) as handle:
        draw(Console(file=handle, width=120, color_system=None))
    click.echo(f"traket: wrote {output}", err=True)


def _write(output: Path | None, text: str) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    with _writing(output) as handle:
        handle.write(text)
    click.echo(f"traket: wrote {output}", err=True)


@contextmanager
def _writing(output: Path) -> Iterator[TextIO]:
    """Open `--output` for writing; a file it cannot write is a bad `--output`."""
    try:
        with output.open("w", encoding="utf-8") as handle:
            yield handle
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {str(output)!r}: {exc.strerror or exc}",
            param_hint="--output",
        ) from exc
