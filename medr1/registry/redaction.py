"""Credentials never leave the process: URLs lose their user:password before they are written anywhere."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://host, also inside longer strings (a launcher command, a log line)
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def strip_credentials(text: str) -> str:
    return _USERINFO.sub(r"\1", text)


def has_credentials(text: str) -> bool:
    return bool(_USERINFO.search(text))


def redact(value):
    """`value` (JSON-like: dicts, lists, strings) with every URL's user:password removed."""
    if isinstance(value, str):
        return strip_credentials(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
