"""A passkey authenticator in software, for the tests: what a phone or a security key does
when a browser calls navigator.credentials.create() / .get(), built on `cryptography`
(ES256 keys, signatures) and `cbor2` (the attestation object; py_webauthn needs it too).

It keeps discoverable credentials (with the account handle), verifies the user (UV
flag), counts signatures, and answers with the JSON a browser's PublicKeyCredential
serialises to (base64url for binary fields), as static/js/passkeys.js sends it. Each
part can be made wrong on purpose: another origin, RP ID or challenge, no user
verification, a sign count set back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def cose_ec2(x: bytes, y: bytes, *, alg: int = -7, crv: int = 1) -> bytes:
    """A COSE EC2 public key (kty 2), as an authenticator writes one."""
    return bytes(cbor2.dumps({1: 2, 3: alg, -1: crv, -2: x, -3: y}))


def cose_key_of(credential: dict[str, Any]) -> dict[int, Any]:
    """The COSE public key inside a created credential's attestation object."""
    attestation = cbor2.loads(unb64url(credential["response"]["attestationObject"]))
    auth_data: bytes = attestation["authData"]
    (length,) = struct.unpack(">H", auth_data[53:55])
    key: dict[int, Any] = cbor2.loads(auth_data[55 + length :])
    return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


class SoftAuthenticator:
    def __init__(self, *, origin: str = "http://localhost:8000", counts: bool = True) -> None:
        self.origin = origin
        # Synced passkeys (Apple, Google) keep no count: they always say 0.
        self.counts = counts
        self.credentials: dict[bytes, Credential] = {}

    # -- navigator.credentials.create() ----------------------------------------------

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        verified: bool = True,
        credential_id: bytes | None = None,
        cose_key: bytes | None = None,
        transports: list[Any] | None = None,
    ) -> dict[str, Any]:
        """A new passkey's credential; `cose_key` replaces its public key (a broken one)."""
        rp = rp_id or options["rp"]["id"]
        key = ec.generate_private_key(ec.SECP256R1())
        credential = Credential(
            id=credential_id or secrets.token_bytes(32),
            key=key,
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
        )
        numbers = key.public_key().public_numbers()
        if cose_key is None:
            cose_key = cose_ec2(numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big"))
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([UP | AT | (UV if verified else 0)])
            + struct.pack(">I", credential.sign_count)
            + bytes(16)  # AAGUID: none
            + struct.pack(">H", len(credential.id))
            + credential.id
            + cose_key
        )
        client_data = self._client_data(
            "webauthn.create", challenge or options["challenge"], origin
        )
        self.credentials[credential.id] = credential
        return _as_json(
            credential,
            {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(
                    cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
                ),
                "transports": ["internal", "hybrid"] if transports is None else transports,
            },
        )

    # -- navigator.credentials.get() -------------------------------------------------

    def get(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        verified: bool = True,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """An assertion by the credential named (or the only one this authenticator has
        for the RP, as a browser offering discoverable credentials would pick)."""
        rp = rp_id or options["rpId"]
        if credential_id is None:
            mine = [c for c in self.credentials.values() if c.rp_id == options["rpId"]]
            assert len(mine) == 1, "name the credential: this authenticator has several"
            credential = mine[0]
        else:
            credential = self.credentials[credential_id]
        if self.counts:
            credential.sign_count += 1
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([UP | (UV if verified else 0)])
            + struct.pack(">I", credential.sign_count if self.counts else 0)
        )
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin)
        signature = credential.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return _as_json(
            credential,
            {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(
                    user_handle if user_handle is not None else credential.user_handle
                ),
            },
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()


def _as_json(credential: Credential, response: dict[str, Any]) -> dict[str, Any]:
    """A PublicKeyCredential as the browser serialises it (passkeys.js sends this)."""
    return {
        "id": b64url(credential.id),
        "rawId": b64url(credential.id),
        "type": "public-key",
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
        "response": response,
    }
