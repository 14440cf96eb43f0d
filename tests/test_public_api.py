"""The public surface: one sorted `__all__`, each name importable, nothing extra."""

from __future__ import annotations

import subprocess
import sys

import traket

PUBLIC = {
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
}


def test_all_lists_exactly_the_public_names_sorted() -> None:
    assert traket.__all__ == sorted(traket.__all__)
    assert set(traket.__all__) == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in traket.__all__:
        assert getattr(traket, name) is not None


def test_no_public_module_attribute_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(traket).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert public <= set(traket.__all__)


def test_errors_are_one_tree_and_builtin_subclasses() -> None:
    assert issubclass(traket.ConfigurationError, traket.TraketError)
    assert issubclass(traket.ConfigurationError, ValueError)
    assert issubclass(traket.InvalidEventError, traket.TraketError)
    assert issubclass(traket.InvalidEventError, ValueError)


def test_importing_traket_needs_no_openai_and_starts_no_thread() -> None:
    script = (
        "import sys, threading\n"
        "sys.modules['openai'] = None\n"
        "import traket\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
    assert result.stderr == ""
