"""Text a server sent, made safe to show: `printable()` is the one sanitiser for banners, details and reasons.

Whatever a server says ends up in a dashboard, a log line, an alert e-mail or a terminal running the CLI,
so it may carry nothing that acts on them: no ESC sequences that repaint a terminal, no CR or LF that forge
a log line, no right-to-left override that makes "gpj.exe" read "exe.jpg", no zero-width characters
that make two different strings look alike.
"""

from __future__ import annotations

import re

ELLIPSIS = "..."
SCAN_FACTOR = 4  # characters looked at per character of `limit`: a 64 KiB flood costs no more than its preview
UTF8_MAX_BYTES = 4  # bytes of one character in UTF-8, so `scan` characters come from at most 4 * scan bytes
_REMOVED = "\0"  # marks a character to replace until runs are merged; a control itself, so it never survives
_REMOVED_RUN = re.compile(_REMOVED + "+")
_SPACE_RUN = re.compile(" {2,}")


def printable(
    text: str | bytes | bytearray,
    *,
    limit: int | None = None,
    replacement: str = " ",
    keep_newlines: bool = False,
) -> str:
    """Return `text` fit to show: every Unicode category C character replaced, whitespace tidied, length bounded.

    1. Bytes are decoded as UTF-8, an undecodable byte becoming U+FFFD (shown, so the oddity stays visible).
    2. Whitespace of any kind (tab, CR, LF, VT, FF, NEL, no-break and other Unicode spaces, line and
       paragraph separators) becomes a space; then runs of spaces become one, and the ends are stripped.
    3. Each run of other category C characters -- controls (C0, DEL, C1 such as the one-byte CSI),
       format characters (RTL overrides, zero-width spaces and joiners, BOM), surrogates, private use
       and unassigned code points -- becomes one `replacement` ("" drops them, "?" marks them).
    4. With `keep_newlines`, line breaks (as `str.splitlines()` finds them) become "\\n" instead: each line
       is tidied on its own and blank lines are dropped (multi-line SMTP and FTP greetings).
    5. Past `limit` characters the text is cut to end in "..." within `limit`. Only the first
       SCAN_FACTOR * `limit` characters are looked at, so the work is bounded too.
    """
    if limit is not None and limit <= len(ELLIPSIS):
        raise ValueError(f"limit must be more than {len(ELLIPSIS)} characters, not {limit}")
    scan = None if limit is None else limit * SCAN_FACTOR
    longer = False
    if isinstance(text, (bytes, bytearray)):
        longer = scan is not None and len(text) > scan * UTF8_MAX_BYTES
        text = bytes(text[: scan * UTF8_MAX_BYTES] if longer else text).decode("utf-8", "replace")
    if scan is not None and len(text) > scan:
        text, longer = text[:scan], True
    if keep_newlines:
        clean = "\n".join(line for line in (_tidy(line, replacement) for line in text.splitlines()) if line)
    else:
        clean = _tidy(text, replacement)
    if limit is not None and (longer or len(clean) > limit):
        clean = clean[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return clean


def _tidy(text: str, replacement: str) -> str:
    """Return one line of `text` with category C characters replaced and its whitespace tidied (steps 2 and 3)."""
    if not text.isprintable():  # the common case skips the loop: isprintable() is False for every C and Z but " "
        text = "".join(char if char.isprintable() else " " if char.isspace() else _REMOVED for char in text)
        text = _REMOVED_RUN.sub(replacement, text)
    return _SPACE_RUN.sub(" ", text).strip()
