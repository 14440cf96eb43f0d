"""A local OpenAI-compatible server that replays recorded responses.

Built on werkzeug's threaded WSGI server. Point a real `openai` client at
`ReplayServer.base_url` (or an Azure client at `azure_endpoint`), choose what it
answers with `respond_with(recording)`, and every following request, whatever its
path, gets that recording's status, headers and body. Server-sent events are
written event by event with chunked transfer encoding, so streams really stream.

    with ReplayServer() as server:
        server.respond_with(load_recordings(Path("recordings"))[0])
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = ["ReceivedRequest", "Recording", "ReplayServer", "load_recordings"]


@dataclass(frozen=True)
class Recording:
    """One recorded exchange: the request that was made and the answer it got."""

    name: str
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: str
    request_body: Any = None
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def is_stream(self) -> bool:
        """Tell whether the answer is a stream of server-sent events."""
        content_type = next(
            (v for k, v in self.headers.items() if k.lower() == "content-type"), ""
        )
        return content_type.startswith("text/event-stream")


@dataclass(frozen=True)
class ReceivedRequest:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def load_recordings(directory: Path) -> list[Recording]:
    """Read every `*.json` recording in `directory` (the shared fixture format)."""
    recordings = []
    for path in sorted(Path(directory).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        request = data.get("request") or {}
        response = data["response"]
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        if not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = "application/json"
        recordings.append(
            Recording(
                name=path.stem,
                method=str(request.get("method", "POST")),
                path=str(request.get("path", "/")),
                status=int(response["status"]),
                headers=headers,
                body=response.get("body") or "",
                request_body=request.get("body"),
                expected=dict(data.get("expected") or {}),
            )
        )
    return sorted(recordings, key=lambda r: r.name)


def _events(body: str) -> Iterator[bytes]:
    """Split an SSE body into its events, each with its blank-line terminator."""
    text = body.replace("\r\n", "\n")
    parts = text.split("\n\n")
    for index, part in enumerate(parts):
        if not part.strip():
            continue
        last = index == len(parts) - 1 and not text.endswith("\n\n")
        yield (part if last else part + "\n\n").encode("utf-8")


class _Handler(WSGIRequestHandler):
    # Each event is its own small write: without TCP_NODELAY, Nagle's algorithm
    # and delayed ACKs would hold a stream's chunks back by tens of milliseconds.
    disable_nagle_algorithm = True

    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # a replay server for tests and demos: no access log


class ReplayServer:
    """Serve recorded answers on 127.0.0.1 from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[ReceivedRequest] = []
        self._host = host
        self._port = port
        self._recording: Recording | None = None
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the replay server is not started")
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        """The `base_url` for `openai.OpenAI` / `AsyncOpenAI`."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The `azure_endpoint` for `openai.AzureOpenAI` / `AsyncAzureOpenAI`."""
        return f"http://{self._host}:{self.port}"

    def respond_with(self, recording: Recording) -> None:
        """Answer every following request with `recording`'s response."""
        with self._lock:
            self._recording = recording

    def start(self) -> ReplayServer:
        if self._server is not None:
            return self
        self._server = make_server(
            self._host,
            self._port,
            self._app,
            threaded=True,
            request_handler=_Handler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="traket-replay-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        path = request.full_path.rstrip("?") if request.query_string else request.path
        received = ReceivedRequest(
            method=request.method,
            path=path,
            headers=dict(request.headers.items()),
            body=request.get_data(),
        )
        with self._lock:
            self.requests.append(received)
            recording = self._recording
        if recording is None:
            response = Response(
                '{"error": {"message": "no recording chosen", "code": "replay"}}',
                status=500,
                content_type="application/json",
            )
            return response(environ, start_response)

        headers = list(recording.headers.items())
        if recording.is_stream:
            # No Content-Length: werkzeug sends each yielded event as a chunk.
            response = Response(_events(recording.body), status=recording.status)
        else:
            response = Response(recording.body.encode("utf-8"), status=recording.status)
        response.headers.clear()
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding"):
                response.headers.add(name, value)
        return response(environ, start_response)
