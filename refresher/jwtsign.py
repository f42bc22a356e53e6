"""RS256 JSON Web Tokens and throw-away TLS certificates for the development API server.

Only the built-in development server (``token-refresher demo`` and the tests) signs tokens, so
``cryptography`` is an optional dependency (the ``demo`` extra). Importing this module never
fails; creating a signer without ``cryptography`` raises a ``RuntimeError`` that says what to
install.

Tokens are shaped like the Kubernetes service-account issuer's: a compact JWS with the header
``{"alg": "RS256", "kid": ...}`` where ``kid`` is the unpadded base64url SHA-256 of the DER
(SubjectPublicKeyInfo) public key, exactly how kube-apiserver derives it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

ALGORITHM = "RS256"
DEFAULT_KEY_SIZE = 2048
RSA_PUBLIC_EXPONENT = 65537
INSTALL_HINT = "pip install token-refresher[demo]"
TLS_VALID_DAYS = 365


class TokenFormatError(ValueError):
    """The text is not a well-formed compact JWS (three base64url JSON parts)."""


class TokenSignatureError(ValueError):
    """The token is well formed but not signed by this key (or not with RS256)."""


def require_cryptography() -> None:
    """Raise ``RuntimeError`` naming the extra to install when ``cryptography`` is missing."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(
            "the development API server needs the 'cryptography' package: "
            f"{INSTALL_HINT} ({_IMPORT_ERROR})"
        ) from _IMPORT_ERROR


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raise ``TokenFormatError`` on bad input."""
    try:
        raw = text.encode("ascii")
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise TokenFormatError("invalid base64url segment") from exc


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenFormatError(f"the {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise TokenFormatError(f"the {what} is not a JSON object")
    return value


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenFormatError("a JWT has three non-empty dot-separated parts")
    return parts[0], parts[1], parts[2]


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(header, claims)`` without checking the signature (for tests and inspection)."""
    header, claims, _signature = _split(token)
    return _json_segment(header, "header"), _json_segment(claims, "claims")


def _compact_json(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode("utf-8")


class RS256Signer:
    """An RSA key pair that signs and verifies RS256 JWTs.

    ``private_key_pem`` loads an existing PKCS#8/PKCS#1 PEM key; without it a fresh key of
    ``key_size`` bits is generated.
    """

    def __init__(
        self, private_key_pem: bytes | None = None, *, key_size: int = DEFAULT_KEY_SIZE
    ) -> None:
        require_cryptography()
        if private_key_pem is None:
            self._key = rsa.generate_private_key(
                public_exponent=RSA_PUBLIC_EXPONENT, key_size=key_size
            )
        else:
            loaded = serialization.load_pem_private_key(private_key_pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("the service-account signing key must be an RSA key")
            self._key = loaded
        self._public = self._key.public_key()
        der = self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._kid = b64url_encode(hashlib.sha256(der).digest())

    def __repr__(self) -> str:
        return f"RS256Signer(kid={self._kid!r})"

    @property
    def kid(self) -> str:
        """Key id put in every header: base64url(SHA-256(DER public key))."""
        return self._kid

    def public_key_pem(self) -> bytes:
        """The public key (SubjectPublicKeyInfo PEM), as ``--service-account-key-file`` takes."""
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: Mapping[str, object]) -> str:
        """Return the compact JWS of ``claims`` with header ``{alg: RS256, kid}``."""
        header = {"alg": ALGORITHM, "kid": self._kid}
        signing_input = ".".join(
            (b64url_encode(_compact_json(header)), b64url_encode(_compact_json(claims)))
        )
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{b64url_encode(signature)}"

    def verify(self, token: str) -> dict[str, Any]:
        """Check the header and RS256 signature; return the claims (their values are unchecked).

        Raises ``TokenFormatError`` for malformed text and ``TokenSignatureError`` for a wrong
        algorithm, key id or signature.
        """
        return _verify(token, self._public, self._kid)


def verify_rs256(token: str, public_key_pem: bytes) -> dict[str, Any]:
    """Verify an RS256 token against a PEM public key; return its claims (values unchecked)."""
    require_cryptography()
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return _verify(token, key, None)


def _verify(token: str, public_key: rsa.RSAPublicKey, kid: str | None) -> dict[str, Any]:
    header_b64, claims_b64, signature_b64 = _split(token)
    header = _json_segment(header_b64, "header")
    if header.get("alg") != ALGORITHM:
        raise TokenSignatureError("unexpected signing algorithm")
    if kid is not None and header.get("kid", kid) != kid:
        raise TokenSignatureError("unknown key id")
    signature = b64url_decode(signature_b64)
    try:
        public_key.verify(
            signature,
            f"{header_b64}.{claims_b64}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature as exc:
        raise TokenSignatureError("invalid signature") from exc
    return _json_segment(claims_b64, "claims")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throw-away CA and a server certificate it signed."""

    ca_file: str
    cert_file: str
    key_file: str
    ca_pem: bytes = field(repr=False)


def write_tls_files(
    directory: str,
    *,
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    dns_names: tuple[str, ...] = ("localhost",),
    valid_days: int = TLS_VALID_DAYS,
) -> TlsFiles:
    """Create a self-signed CA and a serving certificate for the given names in ``directory``.

    The certificates are valid by the real wall clock (TLS peers check them against it), not the
    development server's injectable clock. Keys are ECDSA P-256: fast to generate and accepted by
    every client. The key file is written with mode 0600.
    """
    require_cryptography()
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-refresher devserver CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses
    ]
    names.extend(x509.DNSName(name) for name in dns_names)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-refresher devserver")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files = TlsFiles(
        ca_file=os.path.join(directory, "ca.crt"),
        cert_file=os.path.join(directory, "tls.crt"),
        key_file=os.path.join(directory, "tls.key"),
        ca_pem=ca_pem,
    )
    _write_file(files.ca_file, ca_pem, 0o644)
    _write_file(files.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(files.key_file, key_pem, 0o600)
    return files


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
