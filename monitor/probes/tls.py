"""TLS for every protocol: client contexts, certificate facts, and verification errors as typed failures.

The handshake itself runs in `net.Connection.start_tls`, over memory BIOs, so that the peer's chain
can still be read after verification fails; `facts()` turns it into `TLSFacts`.
"""

from __future__ import annotations

import _ssl
import datetime as dt
import functools
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.probes.errors import ConfigError, TLSExpiredError, TLSHostnameError, TLSVerifyError
from monitor.probes.result import TLSFacts

# OpenSSL X509_V_ERR_* codes, grouped by the failure kind they mean to an operator.
_EXPIRY_CODES = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_HOSTNAME_CODES = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH


def client_context(*, verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Return a shared client context; loading the system trust store costs milliseconds, so it is cached.

    `ca_file` is read on the machine that runs the probe, which need not be where the service was
    saved: a file missing or unreadable here is a `ConfigError` (status unknown), not a crash.
    Without verification no CA is needed, so the file is not read at all.
    """
    if not verify:
        ca_file = None
    try:
        stamp = os.stat(ca_file).st_mtime_ns if ca_file else 0
        return _cached_context(verify, ca_file, stamp)
    except FileNotFoundError:
        raise ConfigError(f"the CA file {ca_file} named by tls_ca_file is missing on this worker") from None
    except OSError as error:  # ssl.SSLError too: a file without a PEM certificate in it
        message = f"the CA file {ca_file} named by tls_ca_file cannot be used on this worker: {error.strerror or error}"
        raise ConfigError(message) from None


@functools.lru_cache(maxsize=64)
def _cached_context(verify: bool, ca_file: str | None, _stamp: int) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def verify_error(error: ssl.SSLCertVerificationError, server_name: str) -> TLSVerifyError:
    """Return the typed error for a failed verification, with a sentence an operator understands."""
    code, message = error.verify_code, (error.verify_message or str(error)).rstrip(".")
    if code in _EXPIRY_CODES:
        return TLSExpiredError(f"certificate verification failed: {message}")
    if code in _HOSTNAME_CODES:
        return TLSHostnameError(f"certificate is not valid for {server_name!r}")
    return TLSVerifyError(f"certificate is not trusted: {message}")


def facts(tls: ssl.SSLObject, *, server_name: str | None, verified: bool, error: str | None) -> TLSFacts | None:
    """Return what the handshake showed about the server's certificate, or None if it sent none."""
    sent = [x509.load_der_x509_certificate(der) for der in peer_chain(tls)]
    if not sent:
        return None
    leaf = sent[0]
    # Clients use the chain OpenSSL built, not every certificate the server sent; that chain is only
    # known when verification ran and passed.
    chain = [x509.load_der_x509_certificate(der) for der in verified_chain(tls)] if verified else []
    chain = chain or sent
    position, first = min(enumerate(chain), key=lambda item: (item[1].not_valid_after_utc, item[0]))
    now = dt.datetime.now(dt.UTC)
    cipher = tls.cipher()
    return TLSFacts(
        version=tls.version(),
        cipher=cipher[0] if cipher else None,
        server_name=server_name,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=_sans(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        days_left=(leaf.not_valid_after_utc - now).total_seconds() / 86400,
        earliest_expiry=min(cert.not_valid_after_utc for cert in sent),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        serial_number=format(leaf.serial_number, "x"),
        verified=verified,
        verify_error=error,
        chain_expiry=first.not_valid_after_utc,
        chain_expiry_subject=first.subject.rfc4514_string(),
        chain_expiry_role="leaf" if position == 0 else "root" if first.subject == first.issuer else "intermediate",
    )


def peer_chain(tls: ssl.SSLObject) -> list[bytes]:
    """Return the DER certificates the peer sent, leaf first, even after a failed verification.

    Python 3.13 made `get_unverified_chain` public; 3.10 to 3.12 have it on the private `_sslobj`.
    Without either we fall back to the leaf, which `getpeercert` gives only after a good handshake.
    """
    chain = _chain(tls, "get_unverified_chain")
    if chain is not None:
        return chain
    try:
        leaf = tls.getpeercert(binary_form=True)
    except ValueError:
        return []
    return [leaf] if leaf else []


def verified_chain(tls: ssl.SSLObject) -> list[bytes]:
    """Return the DER certificates of the chain OpenSSL verified, leaf first and trust anchor last.

    Only meaningful after a handshake that verified; Python 3.13 made `get_verified_chain` public,
    3.10 to 3.12 have it on the private `_sslobj`. Without either, the empty list.
    """
    return _chain(tls, "get_verified_chain") or []


def _chain(tls: ssl.SSLObject, method: str) -> list[bytes] | None:
    public = getattr(tls, method, None)
    if public is not None:
        return [bytes(der) for der in public() or []]
    private = getattr(getattr(tls, "_sslobj", None), method, None)
    if private is not None:
        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in private() or []]
    return None


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = extension.get_values_for_type(x509.DNSName)
    addresses = [str(ip) for ip in extension.get_values_for_type(x509.IPAddress)]
    return tuple(names + addresses)
