"""The protocol registry: every module declares its facts once, and nothing else has to repeat them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.probes import FAILURE_KINDS, PROTOCOLS, SCHEMES, Failure, standard_port
from monitor.probes.errors import ProbeError
from monitor.probes.options import ConnectionOptions, LoginOptions, TLSOptions
from monitor.probes.protocols import discover

ROOT = Path(__file__).resolve().parents[2]
SIBLING = ROOT / "monitor" / "probes" / "protocols" / "tcp.py"


def test_every_protocol_module_declares_one_protocol_named_after_it():
    modules = {path.stem for path in SIBLING.parent.glob("*.py") if not path.stem.startswith("_")}
    assert set(PROTOCOLS) == modules
    assert {"ftp", "telnet", "mysql", "tftp", "udp", "icmp", "fastcgi", "dhcp", "netbios"} <= modules


@pytest.mark.parametrize("key", list(PROTOCOLS))
def test_a_protocol_states_its_facts_consistently(key):
    protocol = PROTOCOLS[key]
    assert issubclass(protocol.options, ConnectionOptions)
    assert inspect.iscoroutinefunction(protocol.probe)
    # TLS options appear only where the protocol can use TLS, and the other way round.
    assert protocol.uses_tls == issubclass(protocol.options, TLSOptions)
    for scheme in protocol.schemes:
        assert SCHEMES[scheme.name] == (protocol, scheme)
        # STARTTLS starts on the plaintext port (25); the submission scheme names 587 for mail clients.
        if scheme.tls_mode != "starttls":
            assert scheme.port is None or scheme.port == standard_port(key, scheme.tls_mode)
    if not protocol.needs_port:  # a protocol without ports names none
        assert all(scheme.port is None for scheme in protocol.schemes)
    option_names = {field.name for field in dataclasses.fields(protocol.options)}
    assert {flag.option for flag in protocol.flags} <= option_names
    assert protocol.label and protocol.summary


@pytest.mark.parametrize("key", list(PROTOCOLS))
def test_every_failure_kind_a_protocol_raises_is_shared_or_declared(key):
    module = sys.modules[PROTOCOLS[key].probe.__module__]
    raised = {
        str(value.failure)
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, ProbeError) and value.__module__ == module.__name__
    }
    assert raised - {str(kind) for kind in Failure} <= set(PROTOCOLS[key].failures)


def test_every_failure_kind_is_documented():
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", (ROOT / "docs" / "architecture.md").read_text(), re.M))
    assert {str(kind) for kind in Failure} | set(FAILURE_KINDS) <= documented


def test_login_options_never_store_or_show_the_password():
    for key, protocol in PROTOCOLS.items():
        if not issubclass(protocol.options, LoginOptions):
            continue
        options = protocol.parse_options({"username": "alice", "password": "s3cret-pw", "allow_plaintext_login": True})
        assert "s3cret-pw" not in repr(options), key
        assert "password" not in options.to_mapping(), key
        assert options.to_mapping()["username"] == "alice"


def test_a_copied_sibling_is_a_new_protocol_with_nothing_else_to_edit(tmp_path, monkeypatch):
    """The check of docs/architecture.md's "Adding a protocol": copy tcp.py, change its key and scheme, done."""
    package = tmp_path / "more_protocols"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = SIBLING.read_text()
    source = source.replace('key="tcp"', 'key="echo"').replace('label="TCP"', 'label="Echo"')
    source = re.sub(r"schemes=\(.*?\n    \),\n", 'schemes=(Scheme("echo", "none", 7),),\n', source, flags=re.S)
    (package / "echo.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))

    found = discover(importlib.import_module("more_protocols"))

    echo = found["echo"]
    assert (echo.label, echo.standard_port("none"), echo.tls_modes) == ("Echo", 7, ("none", "implicit"))
    assert echo.parse_options({"send": "ping\\n", "expect": "ping"}).send == "ping\\n"


def test_two_protocols_cannot_claim_one_scheme_or_one_key(tmp_path, monkeypatch):
    package = tmp_path / "clashing_protocols"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "smtp2.py").write_text(
        textwrap.dedent(
            """
            from monitor.probes.protocols.smtp import PROTOCOL as SMTP
            import dataclasses
            PROTOCOL = dataclasses.replace(SMTP, key="smtp2")
            """
        )
    )
    (package / "smtp3.py").write_text((package / "smtp2.py").read_text().replace("smtp2", "smtp3"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="URL scheme smtp is declared by smtp2 and smtp3"):
        discover(importlib.import_module("clashing_protocols"))

    (package / "smtp3.py").write_text((package / "smtp2.py").read_text())  # key smtp2 in the module smtp3
    sys.modules.pop("clashing_protocols.smtp3", None)
    with pytest.raises(ImportError, match="declares protocol 'smtp2'; name the module after its key"):
        discover(importlib.import_module("clashing_protocols"))


def test_the_readme_lists_every_protocol_with_its_schemes():
    readme = (ROOT / "README.md").read_text()
    for key, protocol in PROTOCOLS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"README.md has no row for {key}"
        assert all(f"`{scheme.name}`" in row for scheme in protocol.schemes), row


@pytest.mark.parametrize("key", list(PROTOCOLS))
def test_every_detail_a_protocol_shows_is_one_its_code_records(key):
    """A `shown` key nothing writes (a typo, a key renamed in the prober) would silently never reach the page.

    The key must be written as a string or a keyword in the module (its declaration left out), or in an
    engine module it takes a helper from (pop3's `login_seconds` is recorded by `mailreply.login_timer`).
    """
    protocol = PROTOCOLS[key]
    module = sys.modules[protocol.probe.__module__]
    own = inspect.getsource(module)
    sources = [own[: own.rindex("PROTOCOL = Protocol(")]]
    helpers = {inspect.getmodule(value) for value in vars(module).values() if inspect.isfunction(value)}
    sources += [inspect.getsource(helper) for helper in helpers - {module} if helper.__name__.startswith("monitor.")]
    assert protocol.shown, f"{key} shows no details on the service page"
    for name, heading in protocol.shown:
        written = re.compile(rf"""["']{re.escape(name)}["']|\b{re.escape(name)}=""")
        assert any(written.search(source) for source in sources), f"{key} shows {name!r}, which it never records"
        assert heading.strip() == heading and heading[0].isupper(), heading
