"""/metrics' version-exposure families: does each (service, location) name its software version, and does it offer
login in clear text, as its last measured probe heard (`monitor.exposure` has the rules).

Exposes `VERSION`, `PLAINTEXT`, `FAMILIES` (name -> HELP) and `values(protocol, tls_mode, last_status, banner,
details) -> (version revealed, plaintext login)`, which `exposition.render()` writes with the rest of each state's
series when the state writer stores them, so a scrape only joins text. An alert can then be
`portwatch_exposure_plaintext_login == 1`.

Decisions:
- Assessed when the state is written, not at scrape time: assessing every state at each scrape cost
  80-130 ms at 5,000 states. The evidence is the state's: its details, its last measured probe's status, and
  the banner of the result that probe stored (`exposure_report.assess_state()`, as the service page and
  `manage.py audit` assess it). The service's TLS mode is an input of the rules for some protocols: it is in
  the rendering's key (`exposition.key()`), so a service whose TLS mode changed is rendered live until its next
  probe.
- The labels are those of every per-service family (service, protocol, host, port, location, instance), so
  `and`/`unless` match without `on()`. Which software and version were heard is not a label: it changes with
  every upgrade (label sets never change at runtime) and is the server's text.
- A pair is written once something was measured there and while it is not paused; 0 when its last probe
  heard nothing (a refused connection reveals nothing). Both families are always declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.exposure_report import assess_state, evidence

VERSION, PLAINTEXT = "portwatch_exposure_version_revealed", "portwatch_exposure_plaintext_login"
FAMILIES: dict[str, str] = {
    VERSION: "1 when the last probe heard the service name its software's version (greeting, Server or "
    "X-Powered-By header, handshake); 0 otherwise",
    PLAINTEXT: "1 when the service offers login without TLS (Telnet, FTP, POP3 or IMAP without TLS, IMAP without "
    "LOGINDISABLED, SMTP AUTH before STARTTLS); 0 otherwise",
}


def values(protocol: str, tls_mode: str, last_status: str, banner: str, details: Mapping[str, Any]) -> tuple[int, int]:
    """Return (version revealed, plaintext login offered) as 0 or 1, from a measured state's evidence."""
    finding = assess_state(protocol, tls_mode, last_status, banner, evidence(details))
    return int(finding.reveals_version), int(finding.plaintext_login)
