"""Name the provider behind an OpenAI client, from its class and its base URL."""

from __future__ import annotations

import re
from typing import Any

_AZURE_HOST_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
_OPENAI_HOSTS = frozenset({"api.openai.com"})
_DEPLOYMENT = re.compile(r"/deployments/([^/?#]+)")


def _host(base_url: Any) -> str:
    try:
        host = base_url.host
    except Exception:  # a client without an httpx URL: nothing to go on
        return ""
    return host.lower() if isinstance(host, str) else ""


def _is_azure_client(client: Any) -> bool:
    # Compared by name along the MRO so that openai need not be imported here.
    return any(
        cls.__name__ in ("AzureOpenAI", "AsyncAzureOpenAI")
        for cls in type(client).__mro__
    )


def _detect(client: Any, base_url: Any) -> str:
    host = _host(base_url)
    if _is_azure_client(client) or host.endswith(_AZURE_HOST_SUFFIXES):
        return "azure_openai"
    if not host or host in _OPENAI_HOSTS:
        return "openai"
    return host


# (client class, base URL object) -> provider, for the clients seen lately. A
# client keeps its URL object until its `base_url` is set again, which then
# misses; the URL is held here so that its id is never reused while cached.
_seen: dict[tuple[type, int], tuple[Any, str]] = {}
_MAX_SEEN = 64


def provider_of(client: Any) -> str:
    """Return `openai`, `azure_openai`, or the host of another compatible server.

    A provider named in `default_attrs` takes precedence; the merge happens where
    the event is built, so this only reports what the client itself shows.
    """
    # `_base_url` is what the `base_url` property returns (openai 1.x to 3.x),
    # without the property's cost; read the property when it is not there.
    base_url = getattr(client, "_base_url", None)
    if base_url is None:
        try:
            base_url = client.base_url
        except Exception:  # not an openai client: nothing to go on
            base_url = None
    key = (type(client), id(base_url))
    known = _seen.get(key)
    if known is not None and known[0] is base_url:
        return known[1]
    provider = _detect(client, base_url)
    if len(_seen) >= _MAX_SEEN:
        _seen.clear()
    _seen[key] = (base_url, provider)
    return provider


def accepts_stream_usage(provider: str) -> bool:
    """Tell whether `stream_options.include_usage` is known to be accepted."""
    return provider in ("openai", "azure_openai")


def azure_deployment(url_path: str) -> str | None:
    """Return the deployment named in an Azure request path, if any."""
    match = _DEPLOYMENT.search(url_path)
    return match.group(1) if match else None
