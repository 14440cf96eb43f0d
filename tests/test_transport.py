"""The HTTP transport: headers, TLS and proxies, one retry layer, no leaked key."""

from __future__ import annotations

import gzip
import http.server
import json
import socketserver
import ssl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from ingest_fakes import (
    WRITE_KEY,
    FakeIngest,
    _http_server,
    ingest,
    make_event,
    raw_ingest,
    senders,
    silent_endpoint,
)

from traket._errors import ConfigurationError
from traket._transport import (
    CallableTransport,
    HttpTransport,
    TransportError,
    TransportResponse,
)

__all__ = ["_http_server", "ingest", "raw_ingest", "senders", "silent_endpoint"]

_CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def test_a_batch_is_posted_with_the_bearer_key_and_json_type(
    ingest: FakeIngest,
) -> None:
    transport = HttpTransport(ingest.url, WRITE_KEY)

    answer = transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert answer.status == 200
    assert json.loads(answer.body)["accepted"] == 1
    assert ingest.headers[0]["Authorization"] == f"Bearer {WRITE_KEY}"
    assert ingest.headers[0]["Content-Type"] == "application/json"
    assert "Content-Encoding" not in ingest.headers[0]


def test_a_gzipped_body_says_so(ingest: FakeIngest) -> None:
    transport = HttpTransport(ingest.url, WRITE_KEY)
    event = make_event()

    answer = transport.send(gzip.compress(_body(event)), gzipped=True, timeout=5)

    assert answer.status == 200
    assert ingest.headers[0]["Content-Encoding"] == "gzip"
    ingest.store.assert_exactly([event])


def test_an_error_status_is_an_answer_not_an_exception(ingest: FakeIngest) -> None:
    transport = HttpTransport(ingest.url, "wrong-key")

    assert transport.send(_body(make_event()), gzipped=False, timeout=5).status == 401


def test_a_network_error_is_a_chained_transport_error_without_the_key() -> None:
    transport = HttpTransport("http://127.0.0.1:9/events", WRITE_KEY)

    with pytest.raises(TransportError) as caught:
        transport.send(b"{}", gzipped=False, timeout=1)

    assert isinstance(caught.value.__cause__, requests.RequestException)
    assert WRITE_KEY not in str(caught.value)


def test_a_timeout_is_a_transport_error(silent_endpoint: str) -> None:
    transport = HttpTransport(silent_endpoint, WRITE_KEY)

    with pytest.raises(TransportError):
        transport.send(b"{}", gzipped=False, timeout=0.2)


def test_the_write_key_is_not_in_the_repr() -> None:
    transport = HttpTransport("https://traket.ai/api/v1/usage/events", WRITE_KEY)

    assert WRITE_KEY not in repr(transport)
    assert WRITE_KEY not in repr(vars(transport).get("endpoint"))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://traket.ai/api/v1/usage/events",
        "http://10.0.0.5:8080/events",
        "http://localhost.example.com/events",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        HttpTransport(endpoint, WRITE_KEY)


def test_plain_http_to_a_remote_host_is_allowed_when_asked() -> None:
    transport = HttpTransport(
        "http://10.0.0.5:8080/events", WRITE_KEY, allow_insecure_http=True
    )

    assert transport.endpoint == "http://10.0.0.5:8080/events"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8000/events",
        "http://127.8.0.1/events",
        "http://localhost:8000/events",
        "http://[::1]:8000/events",
        "https://traket.ai/api/v1/usage/events",
    ],
)
def test_https_and_loopback_http_are_accepted(endpoint: str) -> None:
    assert HttpTransport(endpoint, WRITE_KEY).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint", ["ftp://traket.ai/x", "traket.ai/events", "https://", "https://u:p@h/x"]
)
def test_a_malformed_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="endpoint"):
        HttpTransport(endpoint, WRITE_KEY)


def test_an_empty_write_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="write_key"):
        HttpTransport("https://traket.ai/x", "")


def test_tls_is_verified_proxies_come_from_the_environment_and_nothing_retries() -> (
    None
):
    transport = HttpTransport("https://traket.ai/api/v1/usage/events", WRITE_KEY)
    session: requests.Session = transport._session

    assert session.verify is True
    assert session.trust_env is True
    for url in ("https://traket.ai/", "http://127.0.0.1/"):
        adapter = session.get_adapter(url)
        assert isinstance(adapter, requests.adapters.HTTPAdapter)
        assert adapter.max_retries.total == 0


def test_reset_gives_a_new_session() -> None:
    transport = HttpTransport("https://traket.ai/x", WRITE_KEY)
    before = transport._session

    transport.reset()

    assert transport._session is not before


def test_a_callable_transport_answer_is_a_200_with_that_body() -> None:
    calls: list[tuple[str, Mapping[str, str], bytes]] = []

    def legacy(url: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        calls.append((url, headers, body))
        return {"accepted": 1}

    transport = CallableTransport(legacy, "https://traket.ai/x", WRITE_KEY)
    answer = transport.send(b'{"events":[]}', gzipped=False, timeout=1)

    assert answer == TransportResponse(200, {}, b'{"accepted": 1}')
    assert calls[0][0] == "https://traket.ai/x"
    assert calls[0][1]["Authorization"] == f"Bearer {WRITE_KEY}"
    assert calls[0][2] == b'{"events":[]}'
    assert WRITE_KEY not in repr(transport)


def test_a_callable_transport_that_raises_is_a_transport_error() -> None:
    def legacy(url: str, headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        raise RuntimeError("Traket ingest failed with 503")

    transport = CallableTransport(legacy, "https://traket.ai/x", WRITE_KEY)

    with pytest.raises(TransportError) as caught:
        transport.send(b"{}", gzipped=False, timeout=1)
    assert isinstance(caught.value.__cause__, RuntimeError)


class _Accept(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"accepted":1,"duplicates":0,"rejected":[]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def tls_ingest(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS ingest on 127.0.0.1 whose certificate no system CA vouches for."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/events", ca_file
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_is_refused(
    tls_ingest: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _CA_ENV:
        monkeypatch.delenv(name, raising=False)
    url, _ = tls_ingest
    transport = HttpTransport(url, WRITE_KEY)

    with pytest.raises(TransportError) as caught:
        transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert isinstance(caught.value.__cause__, requests.exceptions.SSLError)


def test_a_ca_bundle_from_the_environment_is_trusted(
    tls_ingest: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _CA_ENV:
        monkeypatch.delenv(name, raising=False)
    url, ca_file = tls_ingest
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    transport = HttpTransport(url, WRITE_KEY)

    answer = transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert answer.status == 200


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: _ProxyServer

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                break
            head += line
        self.server.seen.append(head)
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                self.server.seen.append(self.rfile.read(int(value)))
        refusal = (
            b"403 Forbidden" if head.startswith(b"CONNECT") else b"502 Bad Gateway"
        )
        self.wfile.write(b"HTTP/1.1 " + refusal + b"\r\nContent-Length: 0\r\n\r\n")


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    seen: list[bytes]


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ProxyServer]:
    """A proxy on 127.0.0.1 that records what reaches it and forwards nothing.

    Every proxy variable is cleared first; the test sets the one it needs.
    """
    for name in _PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _proxy_url(server: _ProxyServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_endpoint_never_goes_through_a_proxy(
    ingest: FakeIngest,
    proxy: _ProxyServer,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    host: str,
) -> None:
    monkeypatch.setenv(variable, _proxy_url(proxy))
    transport = HttpTransport(ingest.url.replace("127.0.0.1", host), WRITE_KEY)
    event = make_event()

    answer = transport.send(_body(event), gzipped=False, timeout=5)

    assert answer.status == 200  # the ingest answered, not the proxy
    ingest.store.assert_exactly([event])
    assert proxy.seen == []  # the write key never reached it


def test_an_https_loopback_endpoint_never_goes_through_a_proxy(
    tls_ingest: tuple[str, Path], proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _CA_ENV:
        monkeypatch.delenv(name, raising=False)
    url, ca_file = tls_ingest
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("HTTPS_PROXY", _proxy_url(proxy))
    transport = HttpTransport(url, WRITE_KEY)

    answer = transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert answer.status == 200
    assert proxy.seen == []


def test_an_https_endpoint_honours_the_proxy_from_the_environment(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", _proxy_url(proxy))
    transport = HttpTransport("https://ingest.invalid/api/v1/usage/events", WRITE_KEY)

    with pytest.raises(TransportError) as caught:
        transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert isinstance(caught.value.__cause__, requests.exceptions.ProxyError)
    assert proxy.seen[0].startswith(b"CONNECT ingest.invalid:443 ")
    assert WRITE_KEY.encode() not in b"".join(proxy.seen)  # tunnelled, under TLS


def test_no_proxy_still_exempts_an_https_host(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", _proxy_url(proxy))
    monkeypatch.setenv("NO_PROXY", "ingest.invalid")
    transport = HttpTransport("https://ingest.invalid/api/v1/usage/events", WRITE_KEY)

    with pytest.raises(TransportError) as caught:
        transport.send(_body(make_event()), gzipped=False, timeout=5)

    cause = caught.value.__cause__
    assert isinstance(cause, requests.exceptions.ConnectionError)
    assert not isinstance(cause, requests.exceptions.ProxyError)
    assert proxy.seen == []  # tried the (unresolvable) host itself


def test_an_echoed_write_key_is_blanked_out_of_the_answer(ingest: FakeIngest) -> None:
    from werkzeug import Response

    ingest.then(lambda events: Response(f"who is {WRITE_KEY}?", status=400))
    transport = HttpTransport(ingest.url, WRITE_KEY)

    answer = transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert answer.body == b"who is [write key]?"


def test_a_netrc_entry_cannot_replace_the_bearer_key(
    ingest: FakeIngest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password their-netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    transport = HttpTransport(ingest.url, WRITE_KEY)

    answer = transport.send(_body(make_event()), gzipped=False, timeout=5)

    assert answer.status == 200
    assert ingest.headers[0]["Authorization"] == f"Bearer {WRITE_KEY}"
