"""The version-exposure rules: which software and version a service tells anyone who connects, and whether it
offers login in clear text. Plain Python (no Django), like the engine, so the rules are tested on their own.

Exposes `Software` and `Finding` (frozen), `assess(protocol, tls_mode, banner, details, *, reached)`,
`products(text, source, protocol)`, `plaintext_login(protocol, tls_mode, details)`, `fix_hints(finding, protocol)`,
`clean()`, `EVIDENCE_KEYS` (the details keys the rules read) and `READS_TLS_MODE`.

Decisions:
- Evidence is what the last probe recorded: the greeting (`Result.banner`: SMTP and FTP 220 lines, POP3 and
  IMAP greetings, the Telnet banner) and `details["server_software"]` (a binary greeting's version string,
  MySQL's), `details["server_header"]` and `details["powered_by"]` (HTTP's Server and X-Powered-By).
- Known products are matched by name (Postfix, vsFTPd, Dovecot, ...), so a name alone ("nginx", "Dovecot
  ready.") is found and counted as software without a version; anything else shaped like "Name/1.2.3" or
  "Name 1.2.3" is found too, so a product nobody listed still counts when it names its version.
- Everything a server sent is untrusted: what a Finding holds is stripped of control characters and bounded
  (`MAX_*`), and inputs are cut before any pattern runs, so a hostile greeting costs bounded time.
- Plaintext login: what the probe said (`details["plaintext_login_offered"]`) wins; otherwise it is derived
  from the protocol and TLS mode (Telnet always; FTP, POP3 and IMAP without TLS; IMAP before STARTTLS
  without LOGINDISABLED; SMTP listing AUTH in the EHLO reply before TLS).
- `assess()` is memoized: /metrics and the overview assess every service on each request, and a service's
  evidence rarely changes between two of them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_INPUT_CHARS = 1024  # of each piece of evidence looked at; ProbeResult.banner keeps 512
MAX_EVIDENCE_CHARS = 160  # the snippet a Finding quotes
MAX_NAME_CHARS = 48
MAX_VERSION_CHARS = 64
MAX_LINES = 20  # of a multi-line greeting; an SMTP greeting rarely has more than two
MAX_PRODUCTS = 8  # per piece of evidence: a Server header lists a few modules, never dozens
CACHE_SIZE = 16384  # assessments kept; ~1 KB each, more than one per service of a large fleet

EVIDENCE_KEYS = ("server_software", "server_header", "powered_by")  # details keys quoting the server
SOURCES = {
    "server_software": "software string",
    "server_header": "Server header",
    "powered_by": "X-Powered-By header",
    "banner": "greeting",
}

_V = r"\d[\w.+~-]*"  # a version as servers write it: 2.4.62, 3.0.3, 9.2p1, 1:2.3.19+deb12u1
# Products found by name, each with an optional version: a name alone reveals the software, not its version.
KNOWN = tuple(
    re.compile(pattern, re.ASCII)
    for pattern in (
        rf"\bSSH-[\d.]+-(?P<name>[A-Za-z][\w.-]*?)_(?P<version>{_V})",  # SSH-2.0-OpenSSH_9.2p1
        r"\b(?P<name>Postfix)\b(?: \((?P<version>\d[\w.-]*)\))?",  # "(3.7.11)" is $mail_version; "(Debian/GNU)" not
        rf"\b(?P<name>Microsoft ESMTP MAIL Service)(?:, Version: (?P<version>{_V}))?",
        rf"\b(?P<name>Exim|Sendmail|OpenSMTPD|Haraka|ProFTPD|Dovecot)\b(?:[ /](?P<version>{_V}))?",
        rf"\b(?P<name>vsFTPd|Pure-FTPd|Courier-IMAP|Courier-POP3)\b(?: (?P<version>{_V}))?",
        rf"\b(?P<name>FileZilla Server)(?: version)?(?: (?P<version>{_V}(?: beta)?))?",
        rf"\b(?P<name>Cyrus (?:IMAP|POP3)\d?)(?: v?(?P<version>{_V}))?",
        r"\b(?P<name>Microsoft FTP Service|Microsoft Exchange(?: (?:IMAP4|POP3))?)",
        rf"\b(?P<name>Python SMTP) (?P<version>{_V})",  # aiosmtpd's default greeting
        rf"\b(?P<name>Debian GNU/Linux|Ubuntu|Raspbian GNU/Linux) (?P<version>{_V})",  # /etc/issue.net
        rf"\bKernel (?P<version>{_V})(?P<name>)",  # issue.net's "Kernel \r": the Linux kernel's release
        rf"\b(?P<name>MariaDB|MySQL)\b(?: (?P<version>{_V}))?",
    )
)
_PRODUCT_TOKEN = re.compile(rf"(?<![\w./-])(?P<name>[A-Za-z][\w+.-]{{0,40}})/v?(?P<version>{_V})", re.ASCII)
_NAME_VERSION = re.compile(
    r"(?:(?P<vendor>[A-Z][\w+-]{1,40}) )?(?<![\w.-])(?P<name>[A-Za-z][\w+-]{1,40})"
    r"(?: (?:[Ss]erver|[Ss]ervice|[Dd]aemon|[Vv]ersion:?|[Rr]elease))? v?(?P<version>\d+\.\d+[\w.+~-]*)",
    re.ASCII,
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_COMMENT = re.compile(r"\([^()]*\)")  # "(Debian)" in "Apache/2.4.62 (Debian)"
_MYSQL_VERSION = re.compile(r"(?:5\.5\.5-)?(?P<version>\d+\.\d+\.\d+)(?P<rest>[\w.+~-]*)", re.ASCII)
_REPLY_PREFIX = re.compile(r"^(?:\d{3}[ -]|\+OK ?|\* (?:OK|PREAUTH) ?)(?:\[[^\]]*\] ?)?")  # codes, [CAPABILITY ...]
# Words that are protocols, not products: "SMTP 1.4" names nothing; "Python SMTP 1.4" does.
PROTOCOL_WORDS = frozenset({"SMTP", "ESMTP", "LMTP", "FTP", "IMAP", "IMAP4", "IMAP4REV1", "POP3", "HTTP", "SSH", "TLS"})
FILLER = frozenset({"server", "service", "daemon", "version", "release", "ready", "welcome"})
DISTROS = (
    (re.compile(r"Debian|\bdeb\d+u\d+|\+deb\d+", re.ASCII), "Debian"),
    (re.compile(r"ubuntu", re.ASCII | re.IGNORECASE), "Ubuntu"),
    (re.compile(r"Raspbian"), "Raspbian"),
    (re.compile(r"Red Hat|CentOS|Rocky|AlmaLinux|\.el\d+\b", re.ASCII), "Red Hat family"),
    (re.compile(r"FreeBSD"), "FreeBSD"),
)
DEFAULT_PRODUCT = {"mysql": "MySQL"}  # a protocol's software when its handshake gives a bare version


@dataclass(frozen=True)
class Software:
    """One product a server named: `version` None when it named itself only."""

    name: str
    version: str | None
    source: str  # where it was heard: a key of SOURCES
    evidence: str  # the text it was read from, cleaned and bounded
    distro: str | None = None  # a distribution's name in the same text: "(Debian)", "+deb12u1", "0ubuntu0.22.04"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True)
class Finding:
    """What one probe's evidence reveals about a service: its software, and whether it offers login in clear text."""

    software: tuple[Software, ...] = ()
    plaintext_login: bool = False
    plaintext_why: str = ""  # why it is (or, where the probe could tell, is not) plaintext; "" when nothing says
    heard: bool = False  # the probe reached the server and recorded something

    @property
    def reveals_software(self) -> bool:
        return bool(self.software)

    @property
    def reveals_version(self) -> bool:
        return any(item.version for item in self.software)

    @property
    def exposed(self) -> bool:
        """Return whether anything here is worth fixing: a version for attackers to look up, or a clear-text login."""
        return self.reveals_version or self.plaintext_login

    @property
    def name(self) -> str | None:
        """Return the first product's name (the most specific source comes first), or None."""
        return self.software[0].name if self.software else None

    @property
    def version(self) -> str | None:
        """Return the first version revealed, or None."""
        return next((item.version for item in self.software if item.version), None)


def clean(text: str, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Return `text` without control or format characters (each run becomes a space), at most `limit` characters."""
    text = text[: limit * 4]
    kept = "".join(" " if unicodedata.category(char)[0] in "CZ" and char != " " else char for char in text)
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def assess(
    protocol: str, tls_mode: str, banner: str, details: Mapping[str, Any] | None, *, reached: bool = True
) -> Finding:
    """Return what the evidence of one probe reveals; `reached` False (a refused connection) reveals nothing."""
    details = details if isinstance(details, Mapping) else {}
    evidence = tuple((key, _hashable(details.get(key))) for key in (*EVIDENCE_KEYS, *_LOGIN_KEYS))
    return _assess(protocol, tls_mode, banner or "", evidence, reached)


_LOGIN_KEYS = ("plaintext_login_offered", "extensions", "capabilities")


@functools.lru_cache(maxsize=CACHE_SIZE)
def _assess(protocol: str, tls_mode: str, banner: str, evidence: tuple, reached: bool) -> Finding:
    details = dict(evidence)
    found: list[Software] = []
    for key in EVIDENCE_KEYS:
        if isinstance(details.get(key), str) and details[key].strip():
            found += products(details[key], key, protocol)
    if banner.strip():
        found += products(banner, "banner", protocol)
    heard = reached and (bool(banner.strip()) or any(details.get(key) for key in (*EVIDENCE_KEYS, *_LOGIN_KEYS)))
    plaintext, why = plaintext_login(protocol, tls_mode, details) if reached else (False, "")
    return Finding(tuple(_unique(found)), plaintext, why, heard or plaintext)


def products(text: str, source: str, protocol: str = "") -> list[Software]:
    """Return the products `text` names, as heard from `source` (a key of SOURCES), versions where it gives them.

    A header or software string that matches no pattern ("cloudflare", "Google Frontend") names a product
    all the same: the whole text, without its comments, is its name.
    """
    text = text[:MAX_INPUT_CHARS]
    if source == "server_software" and (mysql := _mysql(text, protocol)):
        return [mysql]
    found = []
    for line in text.splitlines()[:MAX_LINES]:
        found += _banner_products(_REPLY_PREFIX.sub("", line.strip()), source, line)
    if not found and source != "banner" and (name := clean(_COMMENT.sub(" ", text), MAX_NAME_CHARS)):
        found = [_software(name, None, source, text, _distro(text))]
    return _unique(found)[:MAX_PRODUCTS]


def _banner_products(line: str, source: str, evidence: str) -> list[Software]:
    """Return the products one line names: known ones by name, then any "Name/1.2" or "Name 1.2" not inside them."""
    distro = _distro(line)
    found, spans = [], []
    for pattern in KNOWN:
        for match in pattern.finditer(line):
            version = match.groupdict().get("version")
            found.append(_software(match["name"] or "Linux kernel", version, source, evidence, distro))
            if version:  # a name alone leaves its version to the generic patterns: "Postfix 3.7.11"
                spans.append(match.span())
    for pattern in (_PRODUCT_TOKEN, _NAME_VERSION):
        for match in pattern.finditer(line):
            start, end = match.span("name")[0], match.end()
            if any(start < known_end and known_start < end for known_start, known_end in spans):
                continue  # a known product's own words: "FileZilla Server version 0.9.60"
            if (name := _generic_name(match)) and not _IPV4.fullmatch(match["version"]):  # "... 127.0.0.1"
                found.append(_software(name, match["version"], source, evidence, distro))
    return found


def _generic_name(match: re.Match) -> str | None:
    """Return the product a generic match names; a protocol or a word like "Server" needs the word before it."""
    name = match["name"]
    if name.upper() not in PROTOCOL_WORDS and name.lower() not in FILLER:
        return name
    vendor = match.groupdict().get("vendor")
    return f"{vendor} {name}" if vendor else None


def _mysql(text: str, protocol: str) -> Software | None:
    """Return the server of a MySQL handshake's version string: "5.5.5-10.11.6-MariaDB-0+deb12u1" is MariaDB 10.11.6."""
    match = _MYSQL_VERSION.fullmatch(text.strip())
    if match is None:
        return None
    if "MariaDB" in match["rest"]:
        name = "MariaDB"
    elif protocol in DEFAULT_PRODUCT:
        name = DEFAULT_PRODUCT[protocol]
    else:
        return None
    return _software(name, match["version"], "server_software", text, _distro(match["rest"]))


def _software(name: str, version: str | None, source: str, text: str, distro: str | None) -> Software:
    version = clean(version.rstrip(".,;:-"), MAX_VERSION_CHARS) if version else None
    return Software(clean(name, MAX_NAME_CHARS), version or None, source, clean(text), distro)


def _distro(text: str) -> str | None:
    return next((name for pattern, name in DISTROS if pattern.search(text)), None)


def _unique(found: list[Software]) -> list[Software]:
    """Return one Software per name (case ignored), keeping the first with a version, in the order first heard."""
    kept: dict[str, Software] = {}
    for item in found:
        key = item.name.lower()
        if key not in kept or (item.version and not kept[key].version):
            kept[key] = item
    return list(kept.values())


def _hashable(value: Any) -> Any:
    """Return `value` (JSON) in a hashable form: lists as tuples, objects as sorted items; strings bounded."""
    if isinstance(value, str):
        return value[:MAX_INPUT_CHARS]
    if isinstance(value, Mapping):
        return tuple(sorted((str(key), _hashable(item)) for key, item in list(value.items())[:200]))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value[:200])
    return value if isinstance(value, (bool, int, float, type(None))) else str(value)[:MAX_INPUT_CHARS]


# --- Plaintext login ------------------------------------------------------------------------------------------

CLEAR_TEXT = {
    "telnet": "Telnet has no encryption: the login prompt takes names and passwords in clear text",
    "ftp": "FTP without TLS: USER and PASS cross the network in clear text",
    "pop3": "POP3 without TLS: USER and PASS cross the network in clear text",
    "imap": "IMAP without TLS: LOGIN crosses the network in clear text",
}
# The protocols whose verdict depends on the service's TLS mode (`_derived()`): /metrics stores each state's
# verdict, and renders it again when the TLS mode changes (it is in `exposition.key()` for these only).
READS_TLS_MODE = frozenset({"smtp", "imap", *CLEAR_TEXT} - {"telnet"})


def plaintext_login(protocol: str, tls_mode: str, details: Mapping[str, Any]) -> tuple[bool, str]:
    """Return (offered, why): whether the service offers login over a connection without TLS."""
    said = _flag(details.get("plaintext_login_offered"))
    derived, why = _derived(protocol, tls_mode, details)
    if said is None or said == derived:
        return derived, why
    if said:
        return True, f"the {protocol.upper()} probe saw login offered before TLS"
    return False, f"the {protocol.upper()} probe saw login refused until TLS"


def _derived(protocol: str, tls_mode: str, details: Mapping[str, Any]) -> tuple[bool, str]:
    """Return (offered, why) as the protocol, the TLS mode and the capabilities the probe recorded tell."""
    if protocol == "telnet":
        return True, CLEAR_TEXT["telnet"]
    if protocol == "smtp" and tls_mode in ("none", "starttls"):  # "extensions" is the EHLO reply before TLS
        extensions = _pairs(details.get("extensions"))
        if "AUTH" in extensions:
            where = "before STARTTLS" if tls_mode == "starttls" else "without TLS"
            return True, f"AUTH {extensions.get('AUTH', '')} is offered {where}".replace("  ", " ")
        return False, ""
    if protocol == "imap" and tls_mode in ("none", "starttls"):
        listed = details.get("capabilities")
        capabilities = {str(item).upper() for item in listed} if isinstance(listed, (list, tuple)) else set()
        if "LOGINDISABLED" in capabilities:
            return False, "LOGINDISABLED: the server refuses LOGIN until TLS"
        if tls_mode == "starttls":
            return (True, "LOGIN is allowed before STARTTLS (no LOGINDISABLED)") if capabilities else (False, "")
    if protocol in CLEAR_TEXT and tls_mode == "none":
        return True, CLEAR_TEXT[protocol]
    return False, ""


def _pairs(value: Any) -> dict[str, str]:
    """Return EHLO extensions (a mapping, or its items as `_hashable()` left them) with keywords upper case."""
    if isinstance(value, Mapping):
        value = list(value.items())
    if not isinstance(value, (tuple, list)):
        return {}
    pairs = [item for item in value if isinstance(item, (tuple, list)) and len(item) == 2]
    return {str(key).upper(): str(parameters) for key, parameters in pairs}


def _flag(value: Any) -> bool | None:
    """Return a JSON boolean as the database gives it back (true, 1, "true"), None when absent or not one."""
    if value in (True, 1, "true", "1"):
        return True
    if value in (False, 0, "false", "0"):
        return False
    return None


# --- How to fix -----------------------------------------------------------------------------------------------

# By the start of a product's name, lower case: how to stop announcing it.
HINTS = (
    ("postfix", "Postfix: smtpd_banner = $myhostname ESMTP in main.cf (without $mail_name and $mail_version)."),
    ("exim", "Exim: smtp_banner = $smtp_active_hostname ESMTP in the main configuration."),
    ("sendmail", "Sendmail: define(`confSMTP_LOGIN_MSG', `$j') in sendmail.mc, then rebuild sendmail.cf."),
    ("microsoft esmtp", 'Exchange: Set-ReceiveConnector -Banner "220 mail.example.com".'),
    ("vsftpd", "vsftpd: ftpd_banner=Ready in vsftpd.conf."),
    ("proftpd", 'ProFTPD: ServerIdent on "Ready" (or ServerIdent off) in proftpd.conf.'),
    ("pure-ftpd", "Pure-FTPd: the banner names it; hide it behind a firewall or use a fortune file (-F)."),
    ("filezilla", "FileZilla Server: set a custom welcome message without the version."),
    ("dovecot", "Dovecot: login_greeting = Ready in dovecot.conf."),
    ("cyrus", "Cyrus: serverinfo: off in imapd.conf."),
    ("nginx", "nginx: server_tokens off; in the http block."),
    ("openresty", "OpenResty: server_tokens off; in the http block."),
    ("apache", "Apache: ServerTokens Prod and ServerSignature Off."),
    ("openssl", "Apache: ServerTokens Prod also hides OpenSSL and module versions."),
    ("mod_", "Apache: ServerTokens Prod also hides OpenSSL and module versions."),
    ("microsoft-iis", 'IIS: <requestFiltering removeServerHeader="true"> (IIS 10 and later).'),
    ("php", "PHP: expose_php = Off in php.ini."),
    ("lighttpd", 'lighttpd: server.tag = "" in lighttpd.conf.'),
    ("mariadb", "MariaDB: the handshake always carries the version; keep the port off public networks."),
    ("mysql", "MySQL: the handshake always carries the version; keep the port off public networks."),
    ("openssh", "OpenSSH: the version is part of the protocol; DebianBanner no drops the Debian suffix."),
    ("python smtp", "aiosmtpd: pass ident= to SMTP() to change the greeting."),
    ("debian", "Telnet: empty /etc/issue.net, or better, replace Telnet with SSH."),
    ("ubuntu", "Telnet: empty /etc/issue.net, or better, replace Telnet with SSH."),
    ("linux kernel", "Telnet: empty /etc/issue.net, or better, replace Telnet with SSH."),
)
DEFAULT_HINT = "Change the greeting or header so it names no product or version."
LOGIN_HINTS = {
    "smtp": "Offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes; Exim: auth_advertise_hosts).",
    "pop3": "Require TLS before login (Dovecot: ssl = required), or monitor and publish the TLS port only.",
    "imap": "Require TLS before login (Dovecot: ssl = required), or monitor and publish the TLS port only.",
    "ftp": "Require TLS (vsftpd: ssl_enable=YES, force_local_logins_ssl=YES), or move to SFTP.",
    "telnet": "Replace Telnet with SSH.",
}
DEFAULT_LOGIN_HINT = "Require TLS before login."


def fix_hints(finding: Finding, protocol: str) -> list[str]:
    """Return what to change, one hint per product that names its version and one for a clear-text login."""
    hints: list[str] = []
    for item in finding.software:
        if item.version:
            key = item.name.lower()
            hint = next((text for prefix, text in HINTS if key.startswith(prefix)), DEFAULT_HINT)
            if hint not in hints:
                hints.append(hint)
    if finding.plaintext_login:
        hints.append(LOGIN_HINTS.get(protocol, DEFAULT_LOGIN_HINT))
    return hints
