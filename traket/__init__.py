"""Traket: meter AI usage per customer and feature, and see your margins.

One line meters every OpenAI call::

    import traket

    traket.instrument(client, {"environment": "production"})
    with traket.attribute(customer="acme", feature="summaries"):
        client.responses.create(model="gpt-4.1-mini", input="...")

Events are batched and delivered in the background; prompts, outputs, headers and
keys never leave the process.
"""

import logging

from ._client import (
    DEFAULT_ENDPOINT,
    Margins,
    OpenAITracker,
    aflush,
    configure,
    create_margins,
    createMargins,
    flush,
    get_client,
)
from ._errors import ConfigurationError, InvalidEventError, TraketError
from ._instrument import instrument, uninstrument
from ._retry import RetryPolicy
from ._scope import Attribution, attribute, carry_attribution
from ._sender import DeliveryFailure, DeliveryStats
from ._usage import normalize_openai_usage

__version__ = "0.2.0"

# A library logs; the application decides where it goes.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Attribution",
    "ConfigurationError",
    "DEFAULT_ENDPOINT",
    "DeliveryFailure",
    "DeliveryStats",
    "InvalidEventError",
    "Margins",
    "OpenAITracker",
    "RetryPolicy",
    "TraketError",
    "__version__",
    "aflush",
    "attribute",
    "carry_attribution",
    "configure",
    "createMargins",
    "create_margins",
    "flush",
    "get_client",
    "instrument",
    "normalize_openai_usage",
    "uninstrument",
]
