"""The protocol registry: every module in this folder declares `PROTOCOL`, and `REGISTRY` maps keys to them.

Adding a protocol is adding a module here (copy a sibling): nothing else lists protocols. The
Service model's choices, the `probe` command's URL schemes and flags, the dashboard's forms,
standard ports and the documented failure kinds are all read from here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

from monitor.probes.options import OptionsError
from monitor.probes.protocol import Protocol, Scheme
from monitor.probes.result import Failure


def discover(package: ModuleType) -> dict[str, Protocol]:
    """Return the protocols the modules of `package` declare, by key, in the order of their module names.

    A module is named after its protocol's key, so the file to read for a protocol is never in doubt.
    """
    found: dict[str, Protocol] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        protocol = getattr(module, "PROTOCOL", None)
        if not isinstance(protocol, Protocol):
            raise ImportError(f"{module.__name__} declares no PROTOCOL = Protocol(...)")
        if protocol.key != info.name:
            raise ImportError(f"{module.__name__} declares protocol {protocol.key!r}; name the module after its key")
        found[protocol.key] = protocol
    schemes(found)
    failure_kinds(found)
    return found


def schemes(protocols: dict[str, Protocol]) -> dict[str, tuple[Protocol, Scheme]]:
    """Return each URL scheme's protocol and scheme; two protocols declaring one scheme is an error."""
    found: dict[str, tuple[Protocol, Scheme]] = {}
    for protocol in protocols.values():
        for scheme in protocol.schemes:
            if scheme.name in found:
                first = found[scheme.name][0].key
                raise ImportError(f"URL scheme {scheme.name} is declared by {first} and {protocol.key}")
            found[scheme.name] = (protocol, scheme)
    return found


def failure_kinds(protocols: dict[str, Protocol]) -> dict[str, str]:
    """Return each protocol's own failure kinds; one shared by two protocols must mean the same in both."""
    kinds: dict[str, str] = {}
    for protocol in protocols.values():
        for kind, meaning in protocol.failures.items():
            if kind in set(Failure):
                raise ImportError(f"{protocol.key} declares {kind!r}, which is a shared kind of result.Failure")
            if kinds.setdefault(kind, meaning) != meaning:
                raise ImportError(f"failure kind {kind!r} of {protocol.key} is already declared with another meaning")
    return kinds


REGISTRY: dict[str, Protocol] = discover(sys.modules[__name__])
SCHEMES: dict[str, tuple[Protocol, Scheme]] = schemes(REGISTRY)
FAILURE_KINDS: dict[str, str] = failure_kinds(REGISTRY)  # the protocols' own; the shared ones are result.Failure


def get(key: str) -> Protocol:
    """Return the protocol `key` names; raise OptionsError listing the known ones."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise OptionsError("protocol", f"unknown protocol {key!r}; known: {', '.join(REGISTRY)}") from None


def choices() -> list[tuple[str, str]]:
    """Return (key, label) pairs for the Service model's protocol field; a callable, so no migration per protocol."""
    return [(key, protocol.label) for key, protocol in REGISTRY.items()]


def standard_port(protocol: str, tls_mode: str) -> int | None:
    """Return the port a service of this protocol and TLS mode listens on by convention, if there is one."""
    known = REGISTRY.get(protocol)
    return None if known is None else known.standard_port(tls_mode)
