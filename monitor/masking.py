"""What may be shown back of a secret: `masked(text) -> str`, plain Python so channels can use it without Django.

The rule, for a URL (`scheme://...`):
- http, https, smtp and smtps show the scheme, host and port: that host is where messages go, not a credential.
  Anything else (user and password, path, query, fragment) becomes `***`:
  `https://hooks.slack.com/services/T0/B0/XX` -> `https://hooks.slack.com/***`,
  `https://user:pw@example.com:8443/hook?token=x` -> `https://***@example.com:8443/***`.
- Any other scheme shows the scheme only, because apprise URLs keep their token in the host part
  (`tgram://123456:AAF.../chat`, `discord://id/token`): `tgram://***`.

Anything else is a token: one of at least SHOW_TAIL_FROM characters shows its last SHOWN_TAIL (`***wxyz`),
a shorter one is fully masked (`***`): four of twelve characters would give away a third of it. An empty
text stays empty, so a form can tell "not set" from "set".
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
SHOWN_TAIL = 4  # characters of a long token shown back, as payment cards and GitHub do
SHOW_TAIL_FROM = 16  # tokens shorter than this are masked whole
HOST_SCHEMES = ("http", "https", "smtp", "smtps")  # schemes whose host is an address, not a credential
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def masked(text: str) -> str:
    """Return what may be shown of the secret `text` (see the module docstring for the rule)."""
    if not text:
        return ""
    if URL.match(text):
        return _masked_url(text)
    if len(text) < SHOW_TAIL_FROM:
        return MASK
    return MASK + text[-SHOWN_TAIL:]


def _masked_url(text: str) -> str:
    scheme = text.partition("://")[0].lower()
    if scheme not in HOST_SCHEMES:
        return f"{scheme}://{MASK}"
    parts = urllib.parse.urlsplit(text)
    host = _host(parts)
    if host is None:
        return f"{scheme}://{MASK}"
    userinfo = f"{MASK}@" if "@" in parts.netloc else ""
    tail = f"/{MASK}" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{scheme}://{userinfo}{host}{tail}"


def _host(parts: urllib.parse.SplitResult) -> str | None:
    """Return `host[:port]` with an IPv6 host in brackets, or None when the URL has no host or a bad port."""
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not hostname:
        return None
    shown = f"[{hostname}]" if ":" in hostname else hostname
    return shown + (f":{port}" if port is not None else "")
