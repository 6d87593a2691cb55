"""Languages by their ISO 639-1 code."""
from __future__ import annotations

import re

import pycountry

from core.errors import FleetError


def language_name(code: str) -> str | None:
    """English name of an ISO 639-1 code ("de" → "German"), or None if it is not one."""
    if not isinstance(code, str) or not re.fullmatch(r"[a-z]{2}", code):
        return None
    found = pycountry.languages.get(alpha_2=code)
    return found.name if found else None


def languages() -> list[tuple[str, str]]:
    """(code, name) of every ISO 639-1 language, by name."""
    return sorted(((lang.alpha_2, lang.name) for lang in pycountry.languages if hasattr(lang, "alpha_2")),
                  key=lambda pair: pair[1])


def check_language(code: str, option: str) -> str:
    if language_name(code) is None:
        raise FleetError(f"{option} {code!r} is not a language code (ISO 639-1, two letters, e.g. de, nl)", exit_code=2)
    return code
