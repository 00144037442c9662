"""TLS facts and grading across the whole chain, and CA files that the probing machine cannot use.

Chains with an intermediate CA come from trustme plus a re-signed intermediate: trustme's child CAs
are valid until the year 3000, and the point here is an intermediate that expires before the leaf.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from monitor.probes import Status, Target, run_probe
from monitor.probes.protocols import http
from tests.peers.http_server import HTTPServer, Reply

TIMEOUT = 3.0
ROUTES = {"/": Reply(200, b"ok")}


def intermediate_ca(root: trustme.CA, *, not_after: dt.datetime) -> trustme.CA:
    """Return a CA under `root` whose own certificate expires at `not_after`."""
    child = root.create_child_ca()
    cert = x509.load_pem_x509_certificate(child.cert_pem.bytes())
    root_key = serialization.load_pem_private_key(root.private_key_pem.bytes(), password=None)
    short_lived = x509.CertificateBuilder(
        issuer_name=cert.issuer,
        subject_name=cert.subject,
        public_key=cert.public_key(),
        serial_number=cert.serial_number,
        not_valid_before=cert.not_valid_before_utc,
        not_valid_after=not_after,
        extensions=list(cert.extensions),
    ).sign(root_key, hashes.SHA256())
    ca = trustme.CA.from_pem(short_lived.public_bytes(serialization.Encoding.PEM), child.private_key_pem.bytes())
    ca.parent_cert = root  # so that the certificates it issues send it along in their chain
    return ca


def subject_of(pem: trustme.Blob) -> str:
    return x509.load_pem_x509_certificate(pem.bytes()).subject.rfc4514_string()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    """Return (CA file, leaf valid for a year under an intermediate that expires in five days, the intermediate)."""
    now = dt.datetime.now(dt.UTC)
    root = trustme.CA()
    intermediate = intermediate_ca(root, not_after=now + dt.timedelta(days=5))
    leaf = intermediate.issue_cert("localhost", "127.0.0.1", not_after=now + dt.timedelta(days=365))
    ca_file = Path(tmp_path_factory.mktemp("chain")) / "root.pem"
    root.cert_pem.write_to_path(str(ca_file))
    return str(ca_file), leaf, intermediate


async def probe(port: int, **raw):
    return await run_probe(
        "http", Target("127.0.0.1", port, "implicit"), http.Options.from_mapping(raw), timeout=TIMEOUT
    )


async def test_it_warns_when_an_intermediate_expires_first(chain):
    ca_file, leaf, intermediate = chain
    async with HTTPServer(ROUTES, tls=leaf) as server:
        result = await probe(server.port, tls_ca_file=ca_file)

    assert (result.status, str(result.failure)) == (Status.WARNING, "tls_expiring"), result.reason
    subject = re.escape(subject_of(intermediate.cert_pem))
    assert re.fullmatch(
        rf"intermediate certificate {subject} expires in [45]\.\d days \(\d{{4}}-\d\d-\d\d\)", result.reason
    )


async def test_it_records_the_chain_expiry_beside_the_leafs(chain):
    ca_file, leaf, intermediate = chain
    async with HTTPServer(ROUTES, tls=leaf) as server:
        result = await probe(server.port, tls_ca_file=ca_file)

    facts = result.tls.to_dict()
    assert facts["days_left"] > 364
    assert 4 < facts["chain_days_left"] <= 5
    assert (facts["chain_expiry_role"], facts["chain_expiry_subject"]) == (
        "intermediate",
        subject_of(intermediate.cert_pem),
    )


async def test_it_grades_the_chain_the_server_sent_when_verification_is_off(chain):
    _, leaf, intermediate = chain
    async with HTTPServer(ROUTES, tls=leaf) as server:
        result = await probe(server.port, tls_verify="false")

    assert str(result.failure) == "tls_expiring", result.reason
    assert subject_of(intermediate.cert_pem) in result.reason


async def test_a_certificate_the_server_sends_but_the_verified_chain_leaves_out_does_not_warn(certs, tmp_path):
    stale = intermediate_ca(trustme.CA(), not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    bundle = tmp_path / "server.pem"
    bundle.write_bytes(certs.good.private_key_and_cert_chain_pem.bytes() + stale.cert_pem.bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(bundle))
    async with HTTPServer(ROUTES, tls=context) as server:
        result = await probe(server.port, tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.earliest_expiry == x509.load_pem_x509_certificate(stale.cert_pem.bytes()).not_valid_after_utc


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "the CA file {path} named by tls_ca_file is missing on this worker"),
        (
            b"",
            "the CA file {path} named by tls_ca_file cannot be used on this worker: "
            "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found",
        ),
    ],
)
async def test_a_ca_file_this_worker_cannot_use_is_a_config_error_with_nothing_measured(
    certs, tmp_path, content, message
):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        result = await probe(server.port, tls_ca_file=str(path))

    assert (result.status, str(result.failure)) == (Status.UNKNOWN, "config_error")
    assert result.reason.startswith(message.format(path=path)), result.reason


async def test_it_does_not_connect_when_the_ca_file_is_missing(certs, tmp_path):
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        result = await probe(server.port, tls_ca_file=str(tmp_path / "gone.pem"))

    assert (result.address, result.phases.connect) == (None, 0.0)


async def test_it_needs_no_ca_file_when_verification_is_off(certs, tmp_path):
    async with HTTPServer(ROUTES, tls=certs.good) as server:
        result = await probe(server.port, tls_verify="false", tls_ca_file=str(tmp_path / "gone.pem"))

    assert result.status is Status.UP, result.reason
