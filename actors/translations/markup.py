"""Markup a translation may not add: what a browser or a template engine would act on.

A model tricked by its input can answer with more than a translation: a tag left open
(`<img src=x onerror=alert(1) title=`), template syntax (`{{ … }}`, `{% … %}`, `{!! … !!}`),
a `javascript:` link, an image. The source's own markup may come back; anything more fails the
item like a changed placeholder.
"""
from __future__ import annotations

import re
from collections import Counter

# The opening of any tag, closed or not, a comment or declaration; template syntax of Jinja,
# Blade, JS template literals, ERB; script URLs; Markdown link and image targets (`](url)`,
# `[ref]: url`); and URLs.
MARKUP = re.compile(r"""
      <[A-Za-z/!?%][^<>\s]*
    | \{\{ | \{% | \{!! | \{\# | \$\{
    | (?i:javascript|vbscript)\s*:
    | \]\([^)]*\)?
    | ^[ \t]*\[[^\]]+\]:[ \t]*\S+
    | \b[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>"')\]]*
""", re.X | re.M)


def markup(text: str) -> Counter:
    """The markup a text holds (script schemes in lower case, as browsers read them)."""
    found = (m.group(0) for m in MARKUP.finditer(text))
    return Counter(m.lower() if m.lower().startswith(("javascript", "vbscript")) else m for m in found)


def added_markup(source: str, translated: str) -> list[str]:
    """The markup of `translated` that `source` does not have (each cut to 60 characters)."""
    return [m[:60] for m in sorted((markup(translated) - markup(source)).elements())]
