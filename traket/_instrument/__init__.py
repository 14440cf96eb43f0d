"""Meter every OpenAI call made through the `openai` package, with one line.

`instrument()` patches the two places every call of every OpenAI client goes
through once (`request` and `_process_response` of the sync and async base
clients), plus `copy` / `with_options` so that copies of a metered client are
metered. Resource methods, the `parse` and `stream` helpers (and their `beta`
spellings), `with_raw_response`, `with_streaming_response`, Azure clients and
clients created before or after the call are all covered by those patches, so
nothing is patched per resource and a helper can never be counted twice.

Helpers report the endpoint they call: `chat.completions.parse` and
`chat.completions.stream` report `chat.completions.create`, `responses.parse` and
`responses.stream` report `responses.create`; `metadata.stream` tells streams apart.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import wrapt

from .. import _scope
from .._event import check_fields
from . import _calls, _patches, _streams
from ._calls import Config

__all__ = ["instrument", "instrumented", "uninstrument"]

_lock = threading.RLock()
_hook_registered = False

# (module, attribute path, wrapper) for every patch; missing ones are skipped, so
# the same table serves openai 1.x, 2.x and 3.x.
_TABLE: tuple[tuple[str, str, _patches.Wrapper], ...] = (
    ("openai._base_client", "SyncAPIClient.request", _calls.request),
    ("openai._base_client", "AsyncAPIClient.request", _calls.async_request),
    ("openai._base_client", "SyncAPIClient._process_response", _calls.process_response),
    (
        "openai._base_client",
        "AsyncAPIClient._process_response",
        _calls.process_response,
    ),
    ("openai._client", "OpenAI.copy", _calls.copy_client),
    ("openai._client", "OpenAI.with_options", _calls.copy_client),
    ("openai._client", "AsyncOpenAI.copy", _calls.copy_client),
    ("openai._client", "AsyncOpenAI.with_options", _calls.copy_client),
    ("openai.lib.azure", "AzureOpenAI.copy", _calls.copy_client),
    ("openai.lib.azure", "AzureOpenAI.with_options", _calls.copy_client),
    ("openai.lib.azure", "AsyncAzureOpenAI.copy", _calls.copy_client),
    ("openai.lib.azure", "AsyncAzureOpenAI.with_options", _calls.copy_client),
    ("openai.lib.streaming.chat", "ChatCompletionStream.close", _streams.close_helper),
    (
        "openai.lib.streaming.chat",
        "AsyncChatCompletionStream.close",
        _streams.aclose_helper,
    ),
    ("openai.lib.streaming.responses", "ResponseStream.close", _streams.close_helper),
    (
        "openai.lib.streaming.responses",
        "AsyncResponseStream.close",
        _streams.aclose_helper,
    ),
)


def _apply_patches(_module: object = None) -> None:
    with _lock:
        wanted = _calls.registry.everyone is not None or bool(_calls.registry.clients)
        if not wanted or _patches.applied():
            return
        for module, path, wrapper in _TABLE:
            _patches.patch(module, path, wrapper)


def instrument(
    client: Any = None,
    default_attrs: Mapping[str, Any] | None = None,
    *,
    margins: Any = None,
    stream_usage: bool | None = None,
) -> None:
    """Meter the OpenAI calls of `client` (and its copies), or of every client.

    Each call yields one event, recorded to `margins` or, when it is None, to the
    default client (`traket.configure()` or `TRAKET_WRITE_KEY`). `default_attrs`
    are the lowest-precedence attributes of every event, under the names
    `attribute()` takes (`customer`, `feature`, ...; `provider` names an
    OpenAI-compatible server's provider). `stream_usage` decides whether
    streamed chat calls ask for `stream_options.include_usage` when the caller did
    not: None (default) asks OpenAI and Azure only, True asks any server, False
    never asks. Calling again replaces the settings; it never meters twice.
    Raises `InvalidEventError` naming the field when `default_attrs` holds a
    malformed value.
    `openai` need not be imported yet: the patches go in when it is.
    """
    global _hook_registered
    if default_attrs:
        # The names `attribute()` takes (`customer`, ...); an unknown name or a
        # malformed value fails here, named, rather than on every call.
        fields = _scope.scope_fields(default_attrs)
        check_fields(fields)
        # A private, read-only copy: events are built from it without copying.
        default_attrs = MappingProxyType(
            {
                key: dict(value) if isinstance(value, Mapping) else value
                for key, value in fields.items()
            }
        )
    config = Config(
        default_attrs=default_attrs or None,
        margins=margins,
        stream_usage=stream_usage,
    )
    with _lock:
        if client is None:
            _calls.registry.everyone = config
        else:
            _calls.registry.clients[client] = config
        if "openai" in sys.modules:
            _apply_patches()
        elif not _hook_registered:
            wrapt.register_post_import_hook(_apply_patches, "openai")
            _hook_registered = True


def uninstrument(client: Any = None) -> None:
    """Stop metering `client`, or stop metering altogether and remove the patches.

    With a client, only that client's own registration is removed (a global
    `instrument()` still meters it). Without one, every patch is undone.
    """
    with _lock:
        if client is not None:
            _calls.registry.clients.pop(client, None)
            if _calls.registry.everyone is not None or _calls.registry.clients:
                return
        _calls.registry.everyone = None
        _calls.registry.clients.clear()
        _patches.undo_all()


def instrumented(client: Any = None) -> bool:
    """Tell whether `client` (or, without one, every client) is metered."""
    if client is None:
        return _calls.registry.everyone is not None
    return _calls.registry.config_for(client) is not None and bool(_patches.applied())
