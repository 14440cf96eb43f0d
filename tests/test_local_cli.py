"""The `traket` command refuses bad settings with a click error, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import report_dataset
from click.testing import CliRunner, Result

from traket._local import cli
from traket._local._server import IngestServer
from traket._local._store import SCHEMA_VERSION, EventStore

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> Result:
    # catch_exceptions=False: anything but a click error fails the test outright.
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def refused(result: Result, flag: str, *words: str) -> None:
    """Assert a click usage error (exit 2) that names `flag` and says `words`."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value for" in result.output, result.output
    assert flag in result.output
    for word in words:
        assert word in result.output


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return report_dataset.make_db(tmp_path / "traket.sqlite3")


@pytest.fixture
def interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `serve` stop at once, as after Ctrl-C, once it has bound and printed."""

    def interrupt(self: IngestServer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(IngestServer, "serve_forever", interrupt)


# serve: where it listens, and the warning ----------------------------------------


def test_serve_on_every_interface_shows_the_bound_address_and_warns(
    tmp_path: Path,
) -> None:
    script = "import sys\nfrom traket._local.cli import main\nsys.exit(main())\n"
    args = ["serve", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args, "--db", str(tmp_path / "t.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        listening = process.stdout.readline()
        endpoint = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert "listening on http://0.0.0.0:" in listening
    assert "127.0.0.1" not in listening
    assert "TRAKET_ENDPOINT=http://127.0.0.1:" in endpoint
    assert "traket: warning:" in err
    assert "0.0.0.0" in err
    assert "unencrypted" in err
    assert process.returncode == 0


@pytest.mark.usefixtures("interrupted")
@pytest.mark.parametrize(("host", "bound"), [("0.0.0.0", "0.0.0.0"), ("::", "[::]")])
def test_serve_names_the_bound_address_and_warns_on_stderr(
    tmp_path: Path, host: str, bound: str
) -> None:
    if host == "::" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    result = run("serve", "--host", host, "--port", "0", "--db", str(tmp_path / "t"))

    assert result.exit_code == 0, result.output
    assert f"listening on http://{bound}:" in result.stdout
    assert "use this machine's address" in result.stdout
    assert "unencrypted" in result.stderr
    assert "unencrypted" not in result.stdout


@pytest.mark.usefixtures("interrupted")
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_serve_on_loopback_does_not_warn(tmp_path: Path, host: str) -> None:
    result = run("serve", "--host", host, "--port", "0", "--db", str(tmp_path / "t"))

    assert result.exit_code == 0, result.output
    assert "listening on http://127.0.0.1:" in result.stdout
    assert result.stderr == ""


# serve: settings it cannot start with ------------------------------------------


def test_serve_on_a_port_in_use_names_the_port(tmp_path: Path, busy_port: int) -> None:
    result = run("serve", "--port", str(busy_port), "--db", str(tmp_path / "t.db"))

    refused(result, "--port", str(busy_port), "already in use")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", ["empty"]),
        ("key with spaces", ["whitespace"]),
        ("ключ", ["non-ASCII"]),
    ],
)
def test_serve_with_an_unusable_write_key_names_it_without_quoting_it(
    tmp_path: Path, key: str, words: list[str]
) -> None:
    result = run("serve", "--write-key", key, "--db", str(tmp_path / "t.db"))

    refused(result, "--write-key", *words)
    if key:
        assert key not in result.output
    assert not (tmp_path / "t.db").exists()  # checked before the database is made


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_serve_with_a_port_out_of_range_names_it(tmp_path: Path, port: str) -> None:
    result = run("serve", "--port", port, "--db", str(tmp_path / "t.db"))

    refused(result, "--port", "0<=x<=65535")


def test_serve_on_an_address_of_another_machine_names_the_host(
    tmp_path: Path,
) -> None:
    # 192.0.2.0/24 is reserved for documentation: never an address of this machine.
    result = run("serve", "--host", "192.0.2.1", "--db", str(tmp_path / "t.db"))

    refused(result, "--host", "192.0.2.1")


def test_serve_on_a_file_that_is_not_a_database_names_the_db(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)

    result = run("serve", "--port", "0", "--db", str(path))

    refused(result, "--db", "not a database")


# report: settings it cannot use ------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "html"])
def test_report_refuses_a_section_outside_csv(db: Path, fmt: str) -> None:
    result = run("report", "--db", str(db), "--format", fmt, "--section", "days")

    assert result.exit_code == 2
    assert "--section" in result.output
    assert "--format csv" in result.output


def test_report_csv_still_takes_a_section_and_defaults_to_customers(db: Path) -> None:
    days = run("report", "--db", str(db), "--format", "csv", "--section", "days")
    customers = run("report", "--db", str(db), "--format", "csv")

    assert days.output.startswith("day,events,")
    assert customers.output.startswith("customer,events,")


def test_report_on_a_file_that_is_not_a_database_names_the_db(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_text("not a database\n" * 100)

    refused(run("report", "--db", str(path)), "--db", "not a database")


def test_report_on_a_database_from_a_newer_traket_names_the_db(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()

    refused(run("report", "--db", str(db)), "--db", "upgrade traket-sdk")


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_report_to_a_missing_directory_names_the_output(
    db: Path, tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "missing" / "report.txt"

    result = run("report", "--db", str(db), "--format", fmt, "-o", str(target))

    refused(result, "--output", "No such file or directory")


def test_report_with_revenue_that_is_not_utf_8_names_the_revenue(
    db: Path, tmp_path: Path
) -> None:
    revenue = tmp_path / "revenue.csv"
    revenue.write_bytes(b"customer,amount\n\xff\xfeacme,12\n")

    refused(run("report", "--db", str(db), "--revenue", str(revenue)), "--revenue")


def test_report_with_a_price_file_that_is_not_utf_8_names_the_prices(
    db: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_bytes(b"\xff\xfe[models]\n")

    refused(run("report", "--db", str(db), "--prices", str(prices)), "--prices")


def test_report_on_a_huge_recorded_cost_renders_every_format(tmp_path: Path) -> None:
    event: dict[str, Any] = report_dataset.events()[0]
    event["cost"] = {"amount": 1e308, "currency": "usd", "source": "caller"}
    db = tmp_path / "huge.sqlite3"
    with EventStore(db) as store:
        store.insert_batch([event])

    for fmt in ("table", "html", "json", "csv"):
        result = run("report", "--db", str(db), "--format", fmt, "--revenue", "a=1")
        assert result.exit_code == 0, (fmt, result.output)


def test_report_until_the_last_day_there_is_reads_every_event(db: Path) -> None:
    result = run("report", "--db", str(db), "--until", "9999-12-31")

    assert result.exit_code == 0, result.output
    assert "9 events" in result.output


def test_events_with_a_limit_past_any_list_lists_every_event(db: Path) -> None:
    result = run("events", "--db", str(db), "--format", "csv", "--limit", "9" * 30)

    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 1 + 9
