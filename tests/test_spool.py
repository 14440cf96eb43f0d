"""The opt-in SQLite spool: written before submit returns, emptied only by delivery."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_fakes import (
    WRITE_KEY,
    FakeIngest,
    _http_server,
    ingest,
    make_event,
    sender_for,
    senders,
    status,
)

from traket import ConfigurationError, create_margins
from traket._sender import BatchSender, DeliveryFailure
from traket._spool import Spool
from traket._transport import HttpTransport
from traket.testing import InMemoryTransport

__all__ = ["_http_server", "ingest", "senders"]

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        return [json.loads(data) for (data,) in conn.execute("SELECT data FROM spool")]


def test_an_event_is_on_disk_before_submit_returns(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    ingest.fault = status(503)
    sender = sender_for(ingest.url, senders, spool_path=tmp_path / "spool.db")
    event = make_event()

    assert sender.submit(event)

    assert _rows(tmp_path / "spool.db") == [event]


def test_a_delivered_event_leaves_the_spool(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    sender = sender_for(ingest.url, senders, spool_path=tmp_path / "spool.db")
    events = [make_event(i) for i in range(120)]

    for event in events:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(events)
    assert _rows(tmp_path / "spool.db") == []


def test_the_next_process_sends_what_the_last_one_left(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    ingest.fault = status(503)
    first = sender_for(ingest.url, senders, spool_path=path)
    events = [make_event(i) for i in range(10)]
    for event in events:
        first.submit(event)
    assert first.shutdown(0.2) is False
    assert len(_rows(path)) == 10  # kept on disk, not dropped

    ingest.fault = None
    second = sender_for(ingest.url, senders, spool_path=path)

    assert second.flush(5)
    ingest.store.assert_exactly(events)
    assert _rows(path) == []
    assert second.stats().delivered == 10


def test_the_spool_is_bounded_and_its_drops_are_counted(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.fault = status(503)
    sender = sender_for(
        ingest.url,
        senders,
        spool_path=tmp_path / "spool.db",
        max_queue_events=5,
        on_error=failures.append,
    )

    taken = [sender.submit(make_event(i)) for i in range(8)]
    sender.flush(0.1)

    assert taken == [True] * 5 + [False] * 3
    assert sender.stats().dropped["queue_full"] == 3
    assert len(_rows(tmp_path / "spool.db")) == 5
    assert sum(len(f.events) for f in failures if f.reason == "queue_full") == 3


def test_an_event_refused_by_the_ingest_leaves_the_spool(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    ingest.then(status(400))
    sender = sender_for(ingest.url, senders, spool_path=tmp_path / "spool.db")

    sender.submit(make_event())
    assert sender.flush(5)

    assert sender.stats().dropped["malformed"] == 1
    assert _rows(tmp_path / "spool.db") == []


def test_spool_rows_survive_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_events=3)
    rows = [spool.add(b'{"n":%d}' % i) for i in range(4)]
    spool.remove([rows[0]])  # type: ignore[list-item]
    spool.close()

    again = Spool(tmp_path / "spool.db", max_events=3)

    assert rows[3] is None
    assert [data for _, data in again.load()] == [b'{"n":1}', b'{"n":2}']
    assert len(again) == 2


KILLED = f"""
import sys, time
from traket._retry import RetryPolicy
from traket._sender import BatchSender
from traket._transport import HttpTransport

url, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sender = BatchSender(
    HttpTransport(url, {WRITE_KEY!r}),
    spool_path=path,
    flush_interval=0.01,
    retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.05),
)
for i in range(count):
    sender.submit({{"provider": "openai", "idempotencyKey": f"spooled-{{i}}"}})
print("ready", flush=True)
time.sleep(60)
"""

RESTARTED = f"""
import sys
from traket._sender import BatchSender
from traket._transport import HttpTransport

url, path = sys.argv[1], sys.argv[2]
sender = BatchSender(HttpTransport(url, {WRITE_KEY!r}), spool_path=path)
print(sender.flush(10), sender.stats().delivered)
"""


def test_after_kill_9_during_an_outage_every_event_is_delivered_exactly_once(
    ingest: FakeIngest, tmp_path: Path
) -> None:
    path = str(tmp_path / "spool.db")
    answered = 0

    def up_then_down(events: list[dict[str, Any]]) -> Any:
        nonlocal answered
        answered += 1
        return None if answered == 1 else status(503)(events)

    ingest.fault = up_then_down
    victim = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED), ingest.url, path, "450"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "ready"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert len(_rows(Path(path))) >= 350  # the outage kept most of them on disk

    ingest.fault = None
    restarted = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RESTARTED), ingest.url, path],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )

    assert restarted.stderr == ""
    assert restarted.stdout.split()[0] == "True"
    assert set(ingest.store.events) == {f"spooled-{i}" for i in range(450)}
    assert _rows(Path(path)) == []


def test_a_spooled_backlog_adds_workers_without_deadlocking(
    ingest: FakeIngest, tmp_path: Path
) -> None:
    from traket._retry import RetryPolicy

    ingest.fault = status(503)
    sender = BatchSender(
        HttpTransport(ingest.url, WRITE_KEY),
        spool_path=str(tmp_path / "spool.db"),
        batch_size=10,
        retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.05),
    )
    done = threading.Event()

    def submit_many() -> None:
        for i in range(300):
            sender.submit({"provider": "openai", "idempotencyKey": f"backlog-{i}"})
        done.set()

    threading.Thread(target=submit_many, daemon=True).start()
    assert done.wait(10), "submit blocked while a backlog built up"
    ingest.fault = None
    assert sender.flush(10) is True
    assert set(ingest.store.events) == {f"backlog-{i}" for i in range(300)}
    sender.shutdown(1)


def test_an_event_refused_for_its_key_stays_for_a_process_with_a_fixed_key(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path
) -> None:
    ingest.then(status(401))
    sender = sender_for(ingest.url, senders, spool_path=tmp_path / "spool.db")
    event = make_event()

    sender.submit(event)
    assert sender.flush(5)

    assert sender.stats().dropped["unauthorized"] == 1
    assert _rows(tmp_path / "spool.db") == [event]


def _lock_file(path: Path) -> sqlite3.Connection:
    """Hold the spool file's write lock from another connection (another process)."""
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


def test_a_locked_file_fails_a_spool_write_within_its_short_wait(
    tmp_path: Path,
) -> None:
    from traket._spool import ADD_WAIT, SpoolError

    spool = Spool(tmp_path / "spool.db")
    locker = _lock_file(tmp_path / "spool.db")
    try:
        started = time.monotonic()
        with pytest.raises(SpoolError, match="locked") as caught:
            spool.add(b'{"n":1}')
        assert time.monotonic() - started < ADD_WAIT + 0.5
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)

        # A sending thread waiting out the lock in `remove` holds the spool's own
        # lock; a caller's write gives up on that within its wait as well.
        remover = threading.Thread(target=_remove_quietly, args=(spool,))
        remover.start()
        time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(SpoolError):
            spool.add(b'{"n":2}')
        assert time.monotonic() - started < ADD_WAIT + 0.5
        remover.join()
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert spool.add(b'{"n":3}') is not None
    assert len(spool) == 1


def _remove_quietly(spool: Spool) -> None:
    from traket._spool import SpoolError

    with contextlib.suppress(SpoolError):
        spool.remove([1], wait=0.5)


def test_a_spool_locked_before_the_answer_still_settles_delivered_events(
    ingest: FakeIngest,
    senders: list[BatchSender],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "spool.db"
    first = sender_for(ingest.url, senders, spool_path=path, flush_interval=3600)
    events = [make_event(i) for i in range(5)]
    for event in events:
        assert first.submit(event)

    locker = _lock_file(path)
    try:
        with caplog.at_level(logging.WARNING, logger="traket"):
            assert first.flush(5)  # settled, and nothing raised to the caller
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    stats = first.stats()
    assert (stats.delivered, stats.pending, stats.dropped_total) == (5, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("traket")]
    assert len(warnings) == 1
    assert "5 event(s) left on disk" in warnings[0]
    assert "database is locked" in warnings[0]
    assert len(_rows(path)) == 5  # the rows stay, so a later process resends them
    first.shutdown(1)

    second = sender_for(ingest.url, senders, spool_path=path)
    assert second.flush(5)

    ingest.store.assert_exactly(events)  # resent, and stored once
    assert _rows(path) == []


# A spool path it cannot use -------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing/spool.db", "does not exist"),
        ("a-directory", "is a directory"),
        ("not-sqlite.db", "not a database"),
    ],
)
def test_a_spool_path_it_cannot_use_is_a_configuration_error_naming_it(
    tmp_path: Path, where: str, reason: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "not-sqlite.db").write_text("not a database\n" * 100)
    path = tmp_path / where

    with pytest.raises(ConfigurationError) as caught:
        create_margins(
            write_key=WRITE_KEY, transport=InMemoryTransport(), spool_path=path
        )

    message = str(caught.value)
    assert message.startswith("spool_path: ")
    assert str(path) in message
    assert reason in message
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_a_spool_path_that_is_not_a_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"spool_path: expected a file path"):
        Spool(42)  # type: ignore[arg-type]


def test_a_spool_locked_by_another_process_fails_fast_saying_it_is_in_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(ConfigurationError, match="in use by another process"):
            create_margins(
                write_key=WRITE_KEY, transport=InMemoryTransport(), spool_path=path
            )
        assert time.monotonic() - started < 1.5
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    margins = create_margins(
        write_key=WRITE_KEY, transport=InMemoryTransport(), spool_path=path
    )
    margins.shutdown(1)
