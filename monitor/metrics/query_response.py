"""blackbox's tcp `query_response` scripts mapped onto Portwatch: one send and expect, or a mail dialogue with STARTTLS.

Exposes `map_steps(steps, where, tls=...) -> Script`, `Expect`, `ModuleError`, `compile_pattern()` and
`unmet(result, protocol, expects)`, which checks a result against the script's expectations that
Portwatch's own dialogue does not make.

Decisions:
- A script that upgrades with `starttls: true` after sending STARTTLS (SMTP), STLS (POP3) or
  `<tag> STARTTLS` (IMAP) becomes that protocol with STARTTLS, as blackbox's documented smtp_starttls
  example does by hand. Its other sends must be the commands Portwatch's dialogue sends anyway
  (EHLO, CAPA, CAPABILITY, QUIT, LOGOUT); anything else is refused, since Portwatch would not send it.
- Each `expect` is checked after the probe against what the dialogue recorded: the greeting as sent,
  and the capability replies rebuilt from the extensions (SMTP's first EHLO line, the server's name,
  is not kept, so a pattern only it would match fails). The replies to STARTTLS and QUIT are not
  kept, so their patterns must match the bare status Portwatch checks ("220", "+OK", "a1 OK").
- Without STARTTLS, Portwatch's tcp probe reads a banner, sends one line and expects one line, so
  scripts of that shape map (blackbox appends "\\n" to every send, and so does the mapping); a
  first `expect` before a send is checked against the banner line. Longer scripts are refused.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from monitor.probes import Result, Status
from monitor.probes.result import Failure

STEP_KEYS = ("expect", "send", "starttls")
REPLIES = {
    "banner": "banner",
    "greeting": "greeting",
    "capabilities": "capabilities before TLS",
    "capabilities_after_tls": "capabilities after TLS",
}


class ModuleError(ValueError):
    """A module, or a target for it, that Portwatch cannot probe; the message names the module and option."""


@dataclasses.dataclass(frozen=True)
class Expect:
    """A pattern one line of a recorded reply must match, as blackbox's `expect` reads lines until one does."""

    where: str  # e.g. "module 'smtp': tcp.query_response[2].expect", for the reason
    pattern: str
    reply: str  # greeting, capabilities, capabilities_after_tls or banner
    tag: str = ""  # IMAP: the tag the script used, for the rebuilt tagged status line


@dataclasses.dataclass(frozen=True)
class Script:
    protocol: str
    tls_mode: str
    options: dict[str, Any]
    expects: tuple[Expect, ...] = ()


@dataclasses.dataclass(frozen=True)
class Dialogue:
    """What Portwatch's dialogue of one mail protocol sends, and the bare status of the replies it does not keep."""

    protocol: str
    starttls: str  # regular expressions over a send line, stripped of its line ending
    capability: str
    quit: str
    starttls_status: str  # "{tag}" stands for the IMAP tag
    quit_status: tuple[str, ...]  # any of them


DIALOGUES = {
    "smtp": Dialogue("smtp", r"STARTTLS", r"EHLO (?P<name>\S+)", r"QUIT", "220", ("221",)),
    "pop3": Dialogue("pop3", r"STLS", r"CAPA", r"QUIT", "+OK", ("+OK",)),
    "imap": Dialogue(
        "imap",
        r"(?P<tag>\S+) STARTTLS",
        r"(?P<tag>\S+) CAPABILITY",
        r"(?P<tag>\S+) LOGOUT",
        "{tag} OK",
        ("* BYE", "{tag} OK"),
    ),
}
COMMANDS = {
    "smtp": "EHLO, STARTTLS, EHLO, QUIT",
    "pop3": "CAPA, STLS, CAPA, QUIT",
    "imap": "CAPABILITY, STARTTLS, LOGOUT",
}


def compile_pattern(pattern: Any, where: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise ModuleError(f"{where}: must be a regular expression, not {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ModuleError(f"{where}: {pattern!r} is not a regular expression Portwatch can use: {error}") from None


def map_steps(steps: list[Any], where: str, *, tls: bool) -> Script:
    """Return the protocol, TLS mode, options and expectations a query_response script stands for."""
    ops: list[tuple[str, str, Any]] = []  # (where, kind, value), in the order blackbox runs them
    for index, step in enumerate(steps):
        here = f"{where}[{index}]"
        if not isinstance(step, dict):
            raise ModuleError(f"{here}: must be a mapping with expect, send or starttls")
        for key in step:
            if key not in STEP_KEYS:
                raise ModuleError(f"{here}.{key}: Portwatch cannot map this option; a step has {', '.join(STEP_KEYS)}")
        if "expect" in step:
            compile_pattern(step["expect"], f"{here}.expect")
            ops.append((f"{here}.expect", "expect", step["expect"]))
        if "send" in step:
            if not isinstance(step["send"], str):
                raise ModuleError(f"{here}.send: must be text, not {step['send']!r}")
            if "expect" in step and "$" in step["send"]:
                raise ModuleError(f"{here}.send: Portwatch does not fill in parts of the matched line ($1, ${{name}})")
            ops.append((f"{here}.send", "send", step["send"]))
        if step.get("starttls", False) is not False:
            if step["starttls"] is not True:
                raise ModuleError(f"{here}.starttls: must be true or false, not {step['starttls']!r}")
            ops.append((f"{here}.starttls", "starttls", True))
    if any(kind == "starttls" for _, kind, _ in ops):
        if tls:
            raise ModuleError(f"{where}: starttls cannot follow tls: true, which is TLS from the first byte")
        return _mail(ops, where)
    return _plain(ops, where, tls=tls)


def unmet(result: Result, protocol: str, expects: tuple[Expect, ...]) -> Result:
    """Return `result` as down (keyword_missing) when a healthy probe's recorded replies miss an expectation."""
    if not result.ok:
        return result
    for expect in expects:
        lines = recorded(result, protocol, expect)
        if not any(re.search(expect.pattern, line) for line in lines):
            reason = f"{expect.where}: no line matching /{expect.pattern}/ in the {REPLIES[expect.reply]}"
            return dataclasses.replace(result, status=Status.DOWN, failure=Failure.KEYWORD_MISSING, reason=reason)
    return result


def recorded(result: Result, protocol: str, expect: Expect) -> list[str]:
    """Return the lines of one reply as the dialogue recorded them, rebuilt from the result's details."""
    if expect.reply in ("greeting", "banner"):
        return result.banner.splitlines()
    if protocol == "smtp":  # the EHLO extensions, {"SIZE": "1000", "STARTTLS": ""}: 250-SIZE 1000 / 250 STARTTLS
        found = result.details.get(expect.reply.replace("capabilities", "extensions")) or {}
        items = [f"{keyword} {value}".rstrip() for keyword, value in found.items()]
        return [f"250-{item}" for item in items[:-1]] + [f"250 {item}" for item in items[-1:]] or ["250"]
    found = result.details.get(expect.reply) or ()
    if protocol == "pop3":
        return ["+OK", *found, "."] if found else ["+OK"]
    return [f"* CAPABILITY {' '.join(found)}".rstrip(), f"{expect.tag or 'A1'} OK"]


def _plain(ops: list[tuple[str, str, Any]], where: str, *, tls: bool) -> Script:
    shape = [kind for _, kind, _ in ops]
    options: dict[str, Any] = {}
    expects: list[Expect] = []
    if shape[:2] == ["expect", "send"]:  # a banner first: Portwatch reads it as the first line
        options["read_banner"] = True
        expects.append(Expect(ops[0][0], ops[0][2], "banner"))
        ops, shape = ops[1:], shape[1:]
    if shape not in ([], ["expect"], ["send"], ["send", "expect"]):
        raise ModuleError(
            f"{where}: Portwatch's tcp probe reads a banner, sends one line and expects one line; "
            f"this script does {', '.join(shape) or 'nothing'} after its banner"
        )
    for _, kind, value in ops:
        options[kind] = _escaped(value + "\n") if kind == "send" else value
    return Script("tcp", "implicit" if tls else "none", options, tuple(expects))


def _mail(ops: list[tuple[str, str, Any]], where: str) -> Script:
    """Map a STARTTLS script: recognise the protocol by its upgrade command, then walk the dialogue.

    The phase says which reply an `expect` reads: greeting, capabilities, starttls (the reply to the
    upgrade command), tls (nothing yet), capabilities_after_tls, quit.
    """
    dialogue = _recognise(ops, where)
    phase, options, expects, tag = "greeting", {}, [], ""
    for here, kind, value in ops:
        if kind == "starttls":
            if phase != "starttls":
                raise ModuleError(f"{here}: must come right after the STARTTLS command and its reply")
            phase = "tls"
        elif kind == "expect":
            expects += _expect(dialogue, phase, here, value, tag)
        else:
            line = value.rstrip("\r\n")
            phase = _send(dialogue, phase, here, line, options)
            tag = line.split(" ", 1)[0] if dialogue.protocol == "imap" else ""  # the next tagged status's
    if phase == "starttls":
        raise ModuleError(f"{where}: sends the STARTTLS command but never starts TLS (starttls: true)")
    return Script(dialogue.protocol, "starttls", options, tuple(expects))


def _recognise(ops: list[tuple[str, str, Any]], where: str) -> Dialogue:
    """Return the dialogue whose upgrade command is the last send before `starttls: true`."""
    starttls = next(index for index, (_, kind, _) in enumerate(ops) if kind == "starttls")
    if sum(kind == "starttls" for _, kind, _ in ops) > 1:
        raise ModuleError(f"{where}: starts TLS more than once")
    sends = [value.rstrip("\r\n") for _, kind, value in ops[:starttls] if kind == "send"]
    for dialogue in DIALOGUES.values():
        if sends and re.fullmatch(dialogue.starttls, sends[-1], re.IGNORECASE):
            return dialogue
    last = repr(sends[-1]) if sends else "no command"
    raise ModuleError(
        f"{ops[starttls][0]}: follows {last}; Portwatch recognises the upgrades of SMTP (STARTTLS), "
        "POP3 (STLS) and IMAP (<tag> STARTTLS)"
    )


def _send(dialogue: Dialogue, phase: str, here: str, line: str, options: dict[str, Any]) -> str:
    """Return the phase after sending `line`; refuse a line Portwatch's dialogue would not send there."""
    if phase == "quit":
        raise ModuleError(f"{here}: {line!r} comes after the session ended")
    if phase in ("greeting", "capabilities") and re.fullmatch(dialogue.starttls, line, re.IGNORECASE):
        return "starttls"
    if phase in ("greeting", "capabilities", "tls", "capabilities_after_tls"):
        if match := re.fullmatch(dialogue.capability, line, re.IGNORECASE):
            name = match.groupdict().get("name")
            if name and options.setdefault("ehlo_name", name) != name:
                raise ModuleError(
                    f"{here}: Portwatch says EHLO with one name, not {options['ehlo_name']!r} and {name!r}"
                )
            return "capabilities_after_tls" if phase in ("tls", "capabilities_after_tls") else "capabilities"
        if re.fullmatch(dialogue.quit, line, re.IGNORECASE):
            return "quit"
    protocol = dialogue.protocol.upper()
    raise ModuleError(
        f"{here}: {line!r} is not part of Portwatch's {protocol} dialogue ({COMMANDS[dialogue.protocol]})"
    )


def _expect(dialogue: Dialogue, phase: str, here: str, pattern: str, tag: str) -> list[Expect]:
    """Return the expectation to check after the probe, or none when Portwatch's own check implies it."""
    if phase in ("greeting", "capabilities", "capabilities_after_tls"):
        return [Expect(here, pattern, phase, tag)]
    if phase == "tls":
        raise ModuleError(f"{here}: expects a line before any command after TLS, and the server says nothing then")
    statuses = tuple(
        status.format(tag=tag)
        for status in ((dialogue.starttls_status,) if phase == "starttls" else dialogue.quit_status)
    )
    if any(re.search(pattern, status) for status in statuses):
        return []
    reply = "STARTTLS" if phase == "starttls" else "QUIT"
    raise ModuleError(
        f"{here}: Portwatch keeps only the status of the reply to {reply}, {' or '.join(statuses)}, "
        f"which /{pattern}/ does not match"
    )


def _escaped(text: str) -> str:
    """Return `text` in the backslash form the tcp `send` option reads, so its UTF-8 bytes go out unchanged."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F and byte != 0x5C else f"\\x{byte:02x}" for byte in text.encode())
