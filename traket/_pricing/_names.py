"""Model-name rules: dated families and fine-tuned names, never prefixes."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A snapshot date at the end of a name: -2024-08-06, -20240806 or -0613 (MMDD).
_DATE_SUFFIX = re.compile(
    r"^(?P<family>.+?)-"
    r"(?:\d{4}-\d{2}-\d{2}|20\d{6}|(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01]))$"
)
# A partial date left on a fine-tune rule such as `ft:gpt-4o-2024-` or `ft:gpt-4-0`.
_PARTIAL_DATE = re.compile(r"-\d{1,4}$")


@dataclass(frozen=True)
class Candidate:
    """A name to look a price up by, and how it relates to the reported name."""

    name: str
    match: str


def dated_family(name: str) -> str | None:
    """Return the name without its snapshot date, `None` when it carries none."""
    found = _DATE_SUFFIX.match(name)
    return found.group("family") if found else None


def fine_tune_base(name: str) -> str | None:
    """Return the base model of an `ft:` name (`ft:BASE:org:suffix:id`), else `None`."""
    if not name.startswith("ft:"):
        return None
    parts = name.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else None


def rule_family(literal: str) -> str:
    """Return the base family a fine-tune rule such as `ft:gpt-4o-2024-` names."""
    stem = literal.removeprefix("ft:").rstrip("-")
    while True:
        shorter = _PARTIAL_DATE.sub("", stem)
        if shorter == stem:
            return stem
        stem = shorter


def candidates(name: str) -> list[Candidate]:
    """List the names to try, in order: exact, then the dated family.

    A fine-tuned name is tried in full, then as `ft:BASE` and `ft:FAMILY`; it never
    falls back to the base model's prices, which differ from fine-tune prices.
    """
    name = name.strip().lower()
    base = fine_tune_base(name)
    if base is not None:
        found = [Candidate(name, "fine_tune"), Candidate(f"ft:{base}", "fine_tune")]
        family = dated_family(base)
        if family:
            found.append(Candidate(f"ft:{family}", "fine_tune_family"))
        return found

    found = [Candidate(name, "exact")]
    family = dated_family(name)
    if family:
        found.append(Candidate(family, "family"))
    return found
