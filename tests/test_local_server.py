"""The local ingest answers as INGEST.md says, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from traket._errors import ConfigurationError, InvalidEventError
from traket._local._server import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    IngestServer,
    SetupError,
    validate_event,
)
from traket._local._store import EventStore

WRITE_KEY = "tk_test_0123456789"
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


def make_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4.1-mini-2025-04-14",
        "externalCustomerId": "cus_1",
        "feature": "search",
        "idempotencyKey": str(uuid.uuid4()),
        "occurredAt": "2026-01-01T12:00:00.000Z",
        "usage": {
            "input_tokens": 16,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 22,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 38,
        },
        "metadata": {"plan": "pro", "retries": 0, "beta": True, "ratio": 0.5},
    }
    event.update(fields)
    return event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "events.db") as store:
        yield store


@pytest.fixture
def server(store: EventStore) -> Iterator[IngestServer]:
    with IngestServer(store, write_key=WRITE_KEY) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(
    session: requests.Session,
    server: IngestServer,
    events: list[Any],
    **headers: str,
) -> requests.Response:
    return session.post(
        server.url, json={"events": events}, headers={**AUTH, **headers}
    )


def test_url_is_the_loopback_ingest_endpoint(server: IngestServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert server.url.endswith("/api/v1/usage/events")
    assert WRITE_KEY not in repr(server)


def test_a_batch_is_accepted_and_stored(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    events = [make_event(), make_event(feature="chat")]

    response = post(session, server, events)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    stored = sorted(store.events(), key=lambda e: e["feature"])
    assert stored == sorted(events, key=lambda e: e["feature"])


def test_the_same_batch_twice_is_all_duplicates_the_second_time(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    events = [make_event() for _ in range(5)]
    post(session, server, events)

    response = post(session, server, events)

    assert response.json() == {"accepted": 0, "duplicates": 5, "rejected": []}
    assert store.count() == 5


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {WRITE_KEY}x", f"Basic {WRITE_KEY}", WRITE_KEY],
)
def test_a_missing_or_wrong_write_key_is_401(
    server: IngestServer,
    store: EventStore,
    session: requests.Session,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = session.post(
        server.url, json={"events": [make_event()]}, headers=headers
    )

    assert response.status_code == 401
    assert "write key" in response.json()["error"]
    assert store.count() == 0


def test_the_bearer_scheme_is_case_insensitive(
    server: IngestServer, session: requests.Session
) -> None:
    response = session.post(
        server.url,
        json={"events": [make_event()]},
        headers={"Authorization": f"bearer {WRITE_KEY}"},
    )

    assert response.status_code == 200


def test_a_gzip_body_is_accepted(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    body = gzip.compress(json.dumps({"events": [make_event()]}).encode())

    response = session.post(
        server.url, data=body, headers={**AUTH, "Content-Encoding": "gzip"}
    )

    assert response.json()["accepted"] == 1
    assert store.count() == 1


def test_a_body_that_is_not_gzip_is_400(
    server: IngestServer, session: requests.Session
) -> None:
    body = json.dumps({"events": [make_event()]}).encode()

    response = session.post(
        server.url, data=body, headers={**AUTH, "Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    assert "gzip" in response.json()["error"]


def test_an_unknown_content_encoding_is_415(
    server: IngestServer, session: requests.Session
) -> None:
    response = session.post(
        server.url, data=b"{}", headers={**AUTH, "Content-Encoding": "br"}
    )

    assert response.status_code == 415


def test_a_body_over_1_mib_is_413(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    body = b" " * (MAX_BODY_BYTES + 1)

    response = session.post(server.url, data=body, headers=AUTH)

    assert response.status_code == 413
    assert store.count() == 0
    # The refused body was read, so the connection is still good for the next one.
    assert post(session, server, [make_event()]).status_code == 200


def test_a_gzip_body_over_1_mib_once_decompressed_is_413(
    server: IngestServer, session: requests.Session
) -> None:
    padding = " " * (MAX_BODY_BYTES + 1)
    body = gzip.compress(f'{{"events": [], "pad": "{padding}"}}'.encode())
    assert len(body) < 10_000

    response = session.post(
        server.url, data=body, headers={**AUTH, "Content-Encoding": "gzip"}
    )

    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]


def test_an_event_over_32_kib_is_413_naming_its_index(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    big = make_event(metadata={"note": "x" * MAX_EVENT_BYTES})

    response = post(session, server, [make_event(), big])

    assert response.status_code == 413
    assert response.json()["index"] == 1
    assert store.count() == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not valid JSON"),
        (b'{"events": [NaN]}', "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "expected a list"),
        (b'{"events": {}}', "expected a list"),
        (b'{"events": []}', "received 0"),
        (json.dumps({"events": [make_event()] * 101}).encode(), "received 101"),
    ],
)
def test_a_malformed_batch_is_400_naming_the_events_field(
    server: IngestServer, session: requests.Session, body: bytes, error: str
) -> None:
    response = session.post(server.url, data=body, headers=AUTH)

    assert response.status_code == 400
    assert error in response.json()["error"]
    if error != "not valid JSON":
        assert response.json()["field"] == "events"


BAD_EVENTS = [
    ({"provider": None}, "provider"),
    ({"provider": ""}, "provider"),
    ({"idempotencyKey": 5}, "idempotencyKey"),
    ({"occurredAt": "yesterday"}, "occurredAt"),
    ({"occurredAt": None}, "occurredAt"),
    ({"feature": 3}, "feature"),
    ({"externalCustomerId": ["c"]}, "externalCustomerId"),
    ({"durationMs": 1.5}, "durationMs"),
    ({"usage": []}, "usage"),
    ({"usage": {"input_tokens": -1}}, "usage.input_tokens"),
    ({"usage": {"output_tokens": 1.5}}, "usage.output_tokens"),
    ({"usage": {"total_tokens": True}}, "usage.total_tokens"),
    (
        {"usage": {"input_tokens_details": {"cached_tokens": "3"}}},
        "usage.input_tokens_details.cached_tokens",
    ),
    ({"cost": {"amount": "0.10"}}, "cost.amount"),
    ({"cost": {"amount": 1, "currency": 1}}, "cost.currency"),
    ({"metadata": {"nested": {"a": 1}}}, "metadata.nested"),
    ({"metadata": {"listed": [1]}}, "metadata.listed"),
    ({"metadata": "plan=pro"}, "metadata"),
    ({"units": [{"quantity": "many"}]}, "units[0].quantity"),
    ({"units": [{"quantity": 2, "unitName": 7}]}, "units[0].unitName"),
]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_NOW = datetime.now(timezone.utc)
_SAFE = 2**53 - 1

# Values no real call produces: each would wreck every report built on it.
ABSURD_EVENTS = [
    ({"cost": {"amount": 1e308}}, "cost.amount"),
    ({"cost": {"amount": -1e10}}, "cost.amount"),
    ({"cost": {"amount": 10**400}}, "cost.amount"),
    ({"cost": {"amount": 1_000_000_001}}, "cost.amount"),
    ({"usage": {"input_tokens": _SAFE + 1}}, "usage.input_tokens"),
    ({"usage": {"output_tokens": 2**63 - 1}}, "usage.output_tokens"),
    (
        {"usage": {"output_tokens_details": {"reasoning_tokens": _SAFE + 1}}},
        "usage.output_tokens_details.reasoning_tokens",
    ),
    ({"durationMs": _SAFE + 1}, "durationMs"),
    ({"durationMs": -1}, "durationMs"),
    ({"occurredAt": "0205-03-01T00:00:00Z"}, "occurredAt"),
    ({"occurredAt": "1999-12-31T23:59:59.999Z"}, "occurredAt"),
    ({"occurredAt": _iso(_NOW + timedelta(days=8))}, "occurredAt"),
]


@pytest.mark.parametrize(
    "fields",
    [
        {"cost": {"amount": 1e9, "currency": "usd"}},
        {"cost": {"amount": -1e9, "currency": "usd"}},
        {"usage": {"input_tokens": _SAFE, "output_tokens": 0}},
        {"durationMs": _SAFE},
        {"occurredAt": "2000-01-01T00:00:00Z"},
        {"occurredAt": _iso(_NOW + timedelta(days=6))},
    ],
)
def test_values_at_the_bounds_are_accepted(
    server: IngestServer, session: requests.Session, fields: dict[str, Any]
) -> None:
    response = post(session, server, [make_event(**fields)])

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("fields", "field"), ABSURD_EVENTS)
def test_an_absurd_value_is_400_saying_what_range_was_expected(
    server: IngestServer,
    store: EventStore,
    session: requests.Session,
    fields: dict[str, Any],
    field: str,
) -> None:
    response = post(session, server, [make_event(), make_event(**fields)])

    assert response.status_code == 400
    assert store.count() == 0
    body = response.json()
    assert (body["index"], body["field"]) == (1, field)
    assert re.search(r"(up to 2\*\*53-1|-1e9 to 1e9|from 2000-01-01)", body["error"])
    assert "e+308" not in body["error"]
    assert "0205" not in body["error"]


@pytest.mark.parametrize(("fields", "field"), BAD_EVENTS)
def test_a_malformed_event_is_400_naming_its_index_and_field(
    server: IngestServer,
    store: EventStore,
    session: requests.Session,
    fields: dict[str, Any],
    field: str,
) -> None:
    events = [make_event(), make_event(), make_event(**fields)]

    response = post(session, server, events)

    assert response.status_code == 400
    body = response.json()
    assert (body["index"], body["field"]) == (2, field)
    assert field in body["error"]
    assert store.count() == 0  # nothing of the batch is half stored


def test_an_event_that_is_not_an_object_is_400(
    server: IngestServer, session: requests.Session
) -> None:
    response = post(session, server, [make_event(), "event"])

    assert response.status_code == 400
    assert (response.json()["index"], response.json()["field"]) == (1, "event")


def test_an_unstorable_number_is_400(
    server: IngestServer, session: requests.Session
) -> None:
    event = json.dumps(make_event())[:-1] + ', "extra": 1e999}'
    body = f'{{"events": [{event}]}}'.encode()

    response = session.post(server.url, data=body, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["index"] == 0


def test_a_400_never_echoes_the_value(
    server: IngestServer, session: requests.Session
) -> None:
    canary = "canary-4f1d2b"

    response = post(session, server, [make_event(feature={"secret": canary})])

    assert response.status_code == 400
    assert canary not in response.text


def test_optional_fields_may_be_null_and_unknown_keys_are_kept(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    event = make_event(
        feature=None,
        usage=None,
        cost={"amount": None, "currency": "usd"},
        futureField={"anything": [1, 2]},
    )

    response = post(session, server, [event])

    assert response.status_code == 200
    assert list(store.events()) == [event]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/usage/events", 405),
        ("PUT", "/api/v1/usage/events", 405),
        ("DELETE", "/api/v1/usage/events", 405),
        ("GET", "/", 404),
        ("POST", "/api/v1/usage/other", 404),
    ],
)
def test_other_paths_are_404_and_other_methods_405(
    server: IngestServer,
    session: requests.Session,
    method: str,
    path: str,
    status: int,
) -> None:
    url = server.url.replace("/api/v1/usage/events", path)

    response = session.request(method, url, headers=AUTH, json={"events": []})

    assert response.status_code == status
    if status == 405:
        assert response.headers["Allow"] == "POST"


def test_concurrent_posts_store_every_event_once(
    server: IngestServer, store: EventStore
) -> None:
    shared = [make_event() for _ in range(20)]
    failures: list[int] = []

    def send(worker: int) -> None:
        with requests.Session() as session:
            for _ in range(10):
                events = [make_event() for _ in range(30)] + shared
                response = post(session, server, events)
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert store.count() == 8 * 10 * 30 + 20


def test_one_debug_line_per_batch_without_content_or_key(
    server: IngestServer,
    session: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "canary-9c7e01"
    caplog.set_level(logging.DEBUG, logger="traket._local._server")

    post(session, server, [make_event(feature=canary), make_event()])
    post(session, server, [make_event(feature=5, metadata={"k": canary})])

    records = [r for r in caplog.records if r.name == "traket._local._server"]
    assert len(records) == 2
    assert "2 events: 2 accepted, 0 duplicates" in records[0].getMessage()
    for record in records:
        assert canary not in record.getMessage()
        assert WRITE_KEY not in record.getMessage()


def test_the_server_writes_nothing_to_stderr(
    server: IngestServer,
    session: requests.Session,
    capfd: pytest.CaptureFixture[str],
) -> None:
    post(session, server, [make_event()])
    session.get(server.url)
    session.post(server.url, data=b"x")

    assert capfd.readouterr().err == ""


def test_a_client_that_hangs_up_mid_body_leaves_the_server_serving(
    server: IngestServer,
    store: EventStore,
    session: requests.Session,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = int(server.url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(
            b"POST /api/v1/usage/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {WRITE_KEY}\r\n".encode()
            + b'Content-Length: 1000\r\n\r\n{"events": ['
        )

    assert post(session, server, [make_event()]).status_code == 200
    assert store.count() == 1
    assert capfd.readouterr().err == ""


def test_a_store_failure_is_500_and_logged_by_type_only(
    server: IngestServer,
    store: EventStore,
    session: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.close()

    response = post(session, server, [make_event(feature="canary-51e0")])

    assert response.status_code == 500
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["the local ingest failed on a batch: RuntimeError"]


def test_a_request_arriving_while_stopping_is_503_with_retry_after(
    server: IngestServer, store: EventStore, session: requests.Session
) -> None:
    server._httpd._closing = True  # the state stop() sets before draining

    response = post(session, server, [make_event()])

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Connection"] == "close"
    assert store.count() == 0


def test_stop_is_idempotent_and_a_stopped_server_cannot_restart(
    store: EventStore,
) -> None:
    server = IngestServer(store, write_key=WRITE_KEY)
    server.start()
    with pytest.raises(RuntimeError, match="already serving"):
        server.start()

    server.stop()
    server.stop()

    with pytest.raises(RuntimeError, match="stopped"):
        server.start()
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url, json={"events": [make_event()]}, timeout=2)


def test_stop_closes_idle_keep_alive_connections(store: EventStore) -> None:
    server = IngestServer(store, write_key=WRITE_KEY)
    server.start()
    with requests.Session() as session:
        assert post(session, server, [make_event()]).status_code == 200
        alive_before = threading.active_count()

        server.stop(timeout=2.0)

    assert threading.active_count() < alive_before


def test_an_unused_server_stops_at_once(store: EventStore) -> None:
    IngestServer(store, write_key=WRITE_KEY).stop()


def test_an_empty_write_key_is_refused(store: EventStore) -> None:
    with pytest.raises(ConfigurationError, match="write_key"):
        IngestServer(store, write_key="")


@pytest.mark.parametrize("key", ["wk with space", "key\r\nX-Evil: 1", "ключ", "key\t"])
def test_a_write_key_no_sender_could_present_is_refused_unquoted(
    store: EventStore, key: str
) -> None:
    with pytest.raises(SetupError) as caught:
        IngestServer(store, write_key=key)

    assert caught.value.option == "write_key"
    assert key not in str(caught.value)


def test_a_port_in_use_is_a_setup_error_naming_the_port(store: EventStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(SetupError, match="already in use") as caught:
            IngestServer(store, port=port, write_key=WRITE_KEY)

    assert caught.value.option == "port"
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("host", "port", "option"),
    [("192.0.2.1", 0, "host"), ("127.0.0.1", 70000, "port"), ("[::1", 0, "host")],
)
def test_an_unusable_host_or_port_is_a_setup_error_naming_it(
    store: EventStore, host: str, port: int, option: str
) -> None:
    with pytest.raises(SetupError) as caught:
        IngestServer(store, host=host, port=port, write_key=WRITE_KEY)

    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}: ")


def test_bound_to_every_interface_the_banner_url_is_the_bound_address(
    store: EventStore,
) -> None:
    server = IngestServer(store, host="0.0.0.0", write_key=WRITE_KEY)
    try:
        host, port = server.address
        assert (host, port > 0) == ("0.0.0.0", True)
        assert server.bound_url == f"http://0.0.0.0:{port}/api/v1/usage/events"
        assert server.url == f"http://127.0.0.1:{port}/api/v1/usage/events"
        assert not server.loopback
    finally:
        server.stop()


def test_a_bracketed_ipv6_host_is_bound(store: EventStore) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = IngestServer(store, host="[::1]", write_key=WRITE_KEY)
    except SetupError:
        pytest.skip("IPv6 loopback is not configured here")
    try:
        assert server.bound_url.startswith("http://[::1]:")
        assert server.url == server.bound_url
        assert server.loopback
    finally:
        server.stop()


def test_run_server_warns_for_a_non_loopback_host_after_binding(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from traket._local._server import run_server

    def interrupt(self: IngestServer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(IngestServer, "serve_forever", interrupt)
    seen: list[str] = []
    with caplog.at_level(logging.WARNING, logger="traket"):
        run_server(
            tmp_path / "t.db",
            host="0.0.0.0",
            port=0,
            write_key=WRITE_KEY,
            on_ready=lambda server: seen.append(server.bound_url),
        )

    assert seen[0].startswith("http://0.0.0.0:")
    assert [r.getMessage() for r in caplog.records if "unencrypted" in r.getMessage()]


def test_run_server_checks_the_key_before_making_the_database(tmp_path: Path) -> None:
    from traket._local._server import run_server

    with pytest.raises(SetupError, match="write_key"):
        run_server(tmp_path / "t.db", port=0, write_key="")

    assert not (tmp_path / "t.db").exists()


def test_validate_event_raises_naming_the_field() -> None:
    validate_event(make_event())

    with pytest.raises(InvalidEventError) as info:
        validate_event(make_event(usage={"input_tokens": "12"}))

    assert info.value.field == "usage.input_tokens"
    assert "'12'" not in str(info.value)


def test_run_server_serves_until_interrupted(tmp_path: Path) -> None:
    db_path = tmp_path / "events.db"
    script = (
        "import sys\n"
        "from traket._local._server import run_server\n"
        "run_server(sys.argv[1], port=0, write_key=sys.argv[2],\n"
        "           on_ready=lambda server: print(server.url, flush=True))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(db_path), WRITE_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        response = requests.post(
            url, json={"events": [make_event()]}, headers=AUTH, timeout=5
        )
        assert response.status_code == 200

        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert err == ""
    with EventStore(db_path) as store:
        assert store.count() == 1


def test_run_server_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from traket._local._server import run_server\n"
        "run_server(sys.argv[1], port=0, write_key='k',\n"
        "           on_ready=lambda server: print(server.url, flush=True))\n"
    )
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "events.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("http://127.0.0.1:")

        process.terminate()
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert err == ""
