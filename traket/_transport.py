"""Carry one request body to the ingest; the only module that speaks HTTP.

The sender hands over bytes and gets back a status, headers and a body, or a
`TransportError` when it cannot know whether the request arrived. Everything about
retrying lives in the sender, so the adapter here is mounted with retries off.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from ._errors import ConfigurationError, TraketError

__all__ = [
    "CallableTransport",
    "HttpTransport",
    "Transport",
    "TransportError",
    "TransportResponse",
    "check_endpoint",
]

LegacyTransport = Callable[[str, Mapping[str, str], bytes], Mapping[str, Any]]


@dataclass(frozen=True)
class TransportResponse:
    """An ingest's answer: what the sender needs to classify it and read `rejected`."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class TransportError(TraketError):
    """The request may or may not have reached the ingest (network error, reset).

    The sender retries it with the same idempotency keys, so an ingest that did store
    the batch counts the resend as a duplicate.
    """


class Transport(Protocol):
    """What the sender needs from whatever carries its requests."""

    def send(
        self, payload: bytes, *, gzipped: bool, timeout: float
    ) -> TransportResponse:
        """Send one JSON body (gzipped when `gzipped`) within `timeout` seconds."""
        ...

    def reset(self) -> None:
        """Forget every connection; called in a child process after fork."""
        ...

    def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, *, allow_insecure_http: bool = False) -> str:
    """Return `endpoint` if a write key may go there, else raise `ConfigurationError`.

    Plain `http://` is accepted only for a loopback host (the local ingest), unless
    the caller opts in, because the write key travels in a header.
    """
    if not isinstance(endpoint, str):
        raise ConfigurationError(
            "endpoint: expected an http(s) URL string, "
            f"received {type(endpoint).__name__}"
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"endpoint: expected an http(s) URL with a host, received {endpoint[:80]!r}"
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            "endpoint: expected a URL without credentials, received one with user info"
        )
    if (
        parts.scheme == "http"
        and not allow_insecure_http
        and not _is_loopback(parts.hostname)
    ):
        raise ConfigurationError(
            f"endpoint: expected https:// (or http:// to a loopback host), received "
            f"http://{parts.hostname}; pass allow_insecure_http=True to send the write "
            "key in clear text"
        )
    return endpoint


def _redacted(body: bytes, write_key: str) -> bytes:
    """Blank out the write key in an answer, should an ingest or proxy echo it.

    Error bodies reach `DeliveryFailure.detail` and the logs, where the key must not.
    """
    key = write_key.encode("utf-8")
    return body.replace(key, b"[write key]") if key in body else body


def _content_headers(gzipped: bool) -> dict[str, str]:
    if gzipped:
        return {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return {"Content-Type": "application/json"}


def _headers(write_key: str, gzipped: bool) -> dict[str, str]:
    return {"Authorization": f"Bearer {write_key}", **_content_headers(gzipped)}


class _BearerAuth(AuthBase):
    """Set the write key on each request, as the session's own auth.

    A session with no auth of its own looks the host up in `~/.netrc` (or `$NETRC`)
    on every request, and an entry found there, even a `default` one, replaces the
    `Authorization` header: the ingest would get someone's netrc password instead of
    the write key.
    """

    def __init__(self, write_key: str) -> None:
        self._value = f"Bearer {write_key}"

    def __repr__(self) -> str:
        return "_BearerAuth(<write key>)"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request


class _DirectAdapter(HTTPAdapter):
    """An adapter that connects straight to the host, whatever proxies are set.

    `requests` merges `HTTP_PROXY` and friends into every request unless `NO_PROXY`
    names the host, and a plain `http://` proxy would read the write key. Dropping
    the proxies here, where the connection is chosen, leaves no setting to win over.
    """

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs["proxies"] = None
        return super().send(request, *args, **kwargs)


class HttpTransport:
    """Send with a `requests.Session`: TLS verified, proxies from the environment.

    A loopback endpoint (the local ingest) is never sent through a proxy, so the
    write key cannot reach one over plain `http://`; every other endpoint honours the
    environment's proxy settings. The write key is kept out of `repr` and of every
    exception message; `requests` exceptions are translated here, once, into
    `TransportError` chained with `from`.
    """

    def __init__(
        self, endpoint: str, write_key: str, *, allow_insecure_http: bool = False
    ) -> None:
        if not isinstance(write_key, str) or not write_key:
            raise ConfigurationError("write_key: expected a non-empty string")
        self.endpoint = check_endpoint(
            endpoint, allow_insecure_http=allow_insecure_http
        )
        self._write_key = write_key
        self._session = self._new_session()

    def __repr__(self) -> str:
        return f"HttpTransport(endpoint={self.endpoint!r})"

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = _BearerAuth(self._write_key)
        direct = _is_loopback(urlsplit(self.endpoint).hostname or "")
        kind = _DirectAdapter if direct else HTTPAdapter
        adapter = kind(max_retries=0, pool_connections=4, pool_maxsize=16)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def send(
        self, payload: bytes, *, gzipped: bool, timeout: float
    ) -> TransportResponse:
        """POST `payload`; raise `TransportError` when the outcome is unknown.

        `requests` has no total timeout: `timeout` bounds the connect and each read
        separately, and name resolution not at all. Against a server that accepts and
        never answers, or a host that drops packets, the call ends within `timeout`.
        """
        try:
            response = self._session.post(
                self.endpoint,
                data=payload,
                headers=_content_headers(gzipped),
                timeout=max(timeout, 0.001),
                allow_redirects=False,
            )
            body = response.content
        except requests.RequestException as exc:
            raise TransportError(
                f"POST to the ingest failed: {type(exc).__name__}"
            ) from exc
        return TransportResponse(
            response.status_code,
            dict(response.headers),
            _redacted(body, self._write_key),
        )

    def reset(self) -> None:
        """Start a new session; the old one's sockets belong to the parent process."""
        self._session = self._new_session()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


class CallableTransport:
    """Adapt the 0.1.0 `transport=` callable `(url, headers, body) -> Mapping`.

    A returned mapping counts as a 200 whose JSON body is that mapping. An exception
    from the callable is treated like a network error and retried. The callable gets
    no timeout, so a deadline cannot interrupt it; it is the caller's to keep short.
    """

    def __init__(self, fn: LegacyTransport, endpoint: str, write_key: str) -> None:
        if not callable(fn):
            raise ConfigurationError(
                f"transport: expected a callable, received {type(fn).__name__}"
            )
        self.endpoint = endpoint
        self._fn = fn
        self._write_key = write_key

    def __repr__(self) -> str:
        return f"CallableTransport(endpoint={self.endpoint!r})"

    def send(
        self, payload: bytes, *, gzipped: bool, timeout: float
    ) -> TransportResponse:
        """Call the callable; its mapping becomes the body of a 200."""
        try:
            result = self._fn(
                self.endpoint, _headers(self._write_key, gzipped), payload
            )
        except Exception as exc:
            raise TransportError(
                f"the transport callable raised {type(exc).__name__}"
            ) from exc
        try:
            body = json.dumps(dict(result)).encode() if result is not None else b""
        except (TypeError, ValueError):
            body = b""
        return TransportResponse(200, {}, _redacted(body, self._write_key))

    def reset(self) -> None:
        """Nothing to reset: the callable owns its connections."""

    def close(self) -> None:
        """Nothing to close: the callable owns its connections."""
