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


def _host(client: Any) -> str:
    try:
        host = client.base_url.host
    except Exception:  # a client without an httpx URL: nothing to go on
        return ""
    return host.lower() if isinstance(host, str) else ""


def _is_azure_client(client: Any) -> bool:
    # Compared by name along the MRO so that openai need not be imported here.
    return any(
        cls.__name__ in ("AzureOpenAI", "AsyncAzureOpenAI")
        for cls in type(client).__mro__
    )


def provider_of(client: Any) -> str:
    """Return `openai`, `azure_openai`, or the host of another compatible server.

    A provider named in `default_attrs` takes precedence; the merge happens where
    the event is built, so this only reports what the client itself shows.
    """
    host = _host(client)
    if _is_azure_client(client) or host.endswith(_AZURE_HOST_SUFFIXES):
        return "azure_openai"
    if not host or host in _OPENAI_HOSTS:
        return "openai"
    return host


def accepts_stream_usage(provider: str) -> bool:
    """Tell whether `stream_options.include_usage` is known to be accepted."""
    return provider in ("openai", "azure_openai")


def azure_deployment(url_path: str) -> str | None:
    """Return the deployment named in an Azure request path, if any."""
    match = _DEPLOYMENT.search(url_path)
    return match.group(1) if match else None
