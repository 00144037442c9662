"""The standard ports, in one table, and the protocol and TLS mode each URL scheme stands for."""

from __future__ import annotations

# scheme: (protocol, TLS mode, port)
SCHEMES: dict[str, tuple[str, str, int]] = {
    "tcp": ("tcp", "none", 0),  # no standard port: a TCP URL must name one
    "tls": ("tcp", "implicit", 0),  # TCP with TLS from the start, like blackbox's tcp prober with tls: true
    "smtp": ("smtp", "none", 25),
    "submission": ("smtp", "starttls", 587),
    "smtps": ("smtp", "implicit", 465),
    "pop3": ("pop3", "none", 110),
    "pop3s": ("pop3", "implicit", 995),
    "imap": ("imap", "none", 143),
    "imaps": ("imap", "implicit", 993),
    "http": ("http", "none", 80),
    "https": ("http", "implicit", 443),
    "dns": ("dns", "none", 53),
}


def standard_port(protocol: str, tls_mode: str) -> int | None:
    """Return the port a service of this protocol and TLS mode listens on by convention, if there is one.

    STARTTLS runs on the plaintext port (SMTP 25, POP3 110, IMAP 143); mail clients submit on
    587, which the `submission` scheme names.
    """
    if tls_mode == "starttls":
        return standard_port(protocol, "none")
    for scheme_protocol, scheme_mode, port in SCHEMES.values():
        if (scheme_protocol, scheme_mode) == (protocol, tls_mode) and port:
            return port
    return None
