"""Passkeys (WebAuthn): adding, naming and removing them, and signing in with one.

The relying party is py_webauthn (`webauthn`): it builds the options and checks what the
authenticator answered (origin, RP ID hash, challenge, user presence and verification,
the signature, the sign count). This module decides what is stored and when.

- **RP ID** is PUBLIC_URL's host, and the only origin accepted is PUBLIC_URL's. Browsers
  refuse an IP address as an RP ID, so passkeys work on `localhost` or a real domain.
- **Challenges are signed, not stored**, when handed out: the options endpoints write
  nothing (a stranger asking for options a million times fills no table). A challenge
  carries its purpose, its end (5 minutes), a random nonce and an HMAC over those, the
  browser's identity and, for adding one, the account. Answering it spends it: its hash
  goes into `passkey_challenges` in the same transaction that checks the answer, and a
  second answer to the same challenge (a replayed assertion) is refused. Spent rows are
  deleted once the challenge would have expired anyway.
- **Sign-in**: user verification is required, so a passkey counts as both factors (no
  password, no TOTP code). The credential is found by its id and locked; an assertion
  whose sign count does not go up (when the authenticator keeps one) is refused as a
  possible clone. Every attempt is counted against the client's sign-in limit first, in
  the transaction that checks it; the account's own limit is not touched, so an attacker
  guessing passwords cannot lock the owner out of their passkey.
- **Not checked**: attestation. Options ask for none, as passkey providers mostly send
  none and a consumer site has no list of authenticators to allow; so the make and model
  of an authenticator are not proven, only that it holds the private key.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, func, select

from webapp.db import Database
from webapp.domain import events, throttle
from webapp.domain.emails import Emails
from webapp.domain.errors import (
    DomainError,
    EmailNotVerified,
    InvalidInput,
    PasskeyNotFound,
    SigninFailed,
)
from webapp.domain.throttle import Reservation, Throttle
from webapp.models import Account, Client, Passkey, SpentPasskeyChallenge, User, utcnow

if TYPE_CHECKING:
    # Only for types: sessions.py is the one that opens sessions, and py_webauthn is
    # imported at first use (see malformed()).
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor

    from webapp.domain.sessions import NewSession, Sessions

RP_NAME = "Accounts"
# Seconds a challenge may be answered in; the browser is told the same (in ms).
CHALLENGE_LIFETIME = 5 * 60
# Passkeys one account may hold: enough for every device anyone has.
MAX_PASSKEYS = 20
MAX_NAME_LENGTH = 64
# Bytes of the random account handle the authenticator stores (the spec allows 64).
HANDLE_BYTES = 32
# The spec's most for a credential id; a COSE public key far longer than any real one
# (RSA-4096 is about 550 bytes). Both fit their columns once base64url-encoded.
MAX_CREDENTIAL_ID_BYTES = 1023
MAX_PUBLIC_KEY_BYTES = 2048
# What a credential's JSON may be, however it is broken: each means "not accepted".
# COSE algorithm ids a key may be used with, by the kind of key: ES256, ES512; RSASSA-PSS
# and PKCS#1 v1.5 with SHA-256/384/512 (not SHA-1); EdDSA.
_ECDSA = {-7, -36}
_RSA = {-37, -38, -39, -257, -258, -259}
_EDDSA = -8
_TRANSPORTS = ("usb", "nfc", "ble", "smart-card", "internal", "cable", "hybrid")


@functools.cache
def malformed() -> tuple[type[BaseException], ...]:
    """What a credential's checks raise, however it is broken: each means "not accepted".

    py_webauthn (with pyOpenSSL and pyasn1, 5.6 MB) is imported at first use, as
    ua-parser is: a worker that never sees a passkey does not carry it."""
    from webauthn.helpers.exceptions import WebAuthnException

    return (WebAuthnException, ValueError, TypeError, KeyError, RecursionError, OverflowError)


NAME_WRONG = f"Give the passkey a name of at most {MAX_NAME_LENGTH} characters."
NOT_ACCEPTED = "The passkey could not be added. Try again."
ALREADY_ADDED = "That passkey is already added to an account."
TOO_MANY = f"An account can have at most {MAX_PASSKEYS} passkeys. Remove one first."

Purpose = Literal["register", "signin"]
_PURPOSES: dict[Purpose, int] = {"register": 1, "signin": 2}
_VERSION = 1
_HEADER = struct.Struct(">BBQ16s")  # version, purpose, expires (Unix s), nonce
_TAG_BYTES = 16


class PasskeyRejected(SigninFailed):
    """An assertion that does not sign anyone in: unknown or foreign credential, wrong
    origin or challenge, replayed, bad signature, sign count gone backwards."""

    code = "passkey_rejected"


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the passkeys belong to: PUBLIC_URL's host (RP ID) and origin."""

    id: str
    origin: str
    name: str = RP_NAME

    @classmethod
    def from_public_url(cls, public_url: str) -> RelyingParty:
        parts = urlsplit(public_url or "http://localhost")
        host = (parts.hostname or "localhost").lower()
        return cls(id=host, origin=f"{parts.scheme}://{parts.netloc.lower()}")

    @property
    def host_is_ip(self) -> bool:
        """Browsers refuse an IP address as an RP ID: passkeys cannot work here."""
        try:
            ipaddress.ip_address(self.id)
        except ValueError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class PasskeyView:
    """A passkey as its owner sees it."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool
    transports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Minted:
    purpose: Purpose
    expires: int
    handle: bytes


@dataclass(frozen=True, slots=True)
class _Accepted:
    user: User
    reservation: Reservation


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Raises ValueError for anything that is not base64url."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _view(row: Passkey) -> PasskeyView:
    assert row.id is not None
    return PasskeyView(
        id=row.id,
        name=row.name,
        created_at=_aware(row.created_at),
        last_used_at=_aware(row.last_used_at) if row.last_used_at else None,
        backed_up=row.backed_up,
        transports=tuple(filter(None, row.transports.split(","))),
    )


def clean_name(name: str, *, default: str | None = None) -> str:
    """The name as stored: trimmed, on one line; `default` when none is given."""
    cleaned = " ".join(name.split())
    if not cleaned and default is not None:
        return default
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH or not cleaned.isprintable():
        raise InvalidInput({"name": NAME_WRONG})
    return cleaned


def challenge_of(credential: dict[str, Any]) -> bytes:
    """The challenge the browser signed, read from clientDataJSON (checked later by
    py_webauthn against the one expected). Raises ValueError when it is not there."""
    response = credential.get("response")
    if not isinstance(response, dict):
        raise ValueError("no response")
    try:
        client_data = json.loads(unb64url(response.get("clientDataJSON", "")))
    except RecursionError:
        raise ValueError("clientDataJSON nests too deep") from None
    if not isinstance(client_data, dict):
        raise ValueError("clientDataJSON is not an object")
    return unb64url(client_data.get("challenge", ""))


def usable_public_key(cose_key: bytes) -> bool:
    """Whether the COSE key is one that can check signatures: a point on its curve, an
    RSA key of 2048 bits or more, an Ed25519 key; and of the kind its algorithm names."""
    from webauthn.helpers import decode_credential_public_key, decoded_public_key_to_cryptography

    if len(cose_key) > MAX_PUBLIC_KEY_BYTES:
        return False
    try:
        decoded = decode_credential_public_key(cose_key)
        key = decoded_public_key_to_cryptography(decoded)
    except malformed():
        return False
    algorithm = getattr(decoded, "alg", None)
    if isinstance(key, EllipticCurvePublicKey):
        return algorithm in _ECDSA
    if isinstance(key, RSAPublicKey):
        return algorithm in _RSA and key.key_size >= 2048
    return algorithm == _EDDSA


class Challenges:
    """Signed, self-contained WebAuthn challenges (see the module's docstring)."""

    def __init__(self, key: bytes, clock: Callable[[], float]) -> None:
        self._key = key
        self._clock = clock

    def _tag(self, body: bytes, *, browser: str, user_id: int | None) -> bytes:
        bound = body + b"|" + browser.encode() + b"|" + str(user_id or "").encode()
        return hmac.new(self._key, bound, hashlib.sha256).digest()[:_TAG_BYTES]

    def mint(
        self, purpose: Purpose, *, browser: str, user_id: int | None, handle: bytes = b""
    ) -> bytes:
        expires = int(self._clock()) + CHALLENGE_LIFETIME
        body = _HEADER.pack(_VERSION, _PURPOSES[purpose], expires, secrets.token_bytes(16))
        body += handle
        return body + self._tag(body, browser=browser, user_id=user_id)

    def check(
        self, challenge: bytes, purpose: Purpose, *, browser: str, user_id: int | None
    ) -> _Minted | None:
        """What the challenge says, if this site made it for this purpose, browser and
        account, and it has not expired; else None."""
        if len(challenge) < _HEADER.size + _TAG_BYTES:
            return None
        body, tag = challenge[:-_TAG_BYTES], challenge[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body, browser=browser, user_id=user_id)):
            return None
        version, kind, expires, _nonce = _HEADER.unpack(body[: _HEADER.size])
        if version != _VERSION or kind != _PURPOSES[purpose] or expires <= self._clock():
            return None
        return _Minted(purpose, expires, body[_HEADER.size :])


def spend_in(session: Session, challenge: bytes, minted: _Minted) -> bool:
    """Record the challenge as answered, in the caller's transaction; False when it was
    answered before (a replay), by this request's rivals included."""
    now = utcnow()
    session.exec(delete(SpentPasskeyChallenge).where(col(SpentPasskeyChallenge.expires_at) < now))
    try:
        with session.begin_nested():
            session.add(
                SpentPasskeyChallenge(
                    challenge_hash=hashlib.sha256(challenge).hexdigest(),
                    expires_at=datetime.fromtimestamp(minted.expires, UTC),
                )
            )
    except IntegrityError:
        return False
    return True


def _transports(values: object) -> list[str]:
    """The known transports among `values`, each once, in order."""
    if not isinstance(values, list):
        return []
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and v in _TRANSPORTS))


class PasskeyService:
    def __init__(
        self,
        db: Database,
        limits: Throttle,
        emails: Emails,
        sessions: Sessions,
        *,
        key: bytes,
        relying_party: RelyingParty,
        require_confirmed_email: bool = False,
    ) -> None:
        self.db = db
        # EMAIL_VERIFICATION=required: a passkey does not sign in an unconfirmed address,
        # as a password does not (a new link goes out instead).
        self.require_confirmed_email = require_confirmed_email
        self.throttle = limits
        self.emails = emails
        self.sessions = sessions
        self.rp = relying_party
        # Seconds since the epoch; tests may pin it.
        self.clock: Callable[[], float] = time.time
        self.challenges = Challenges(key, lambda: self.clock())

    # -- what the security page shows ----------------------------------------------

    async def of_account(self, user_id: int) -> list[PasskeyView]:
        return await self.db.read(self._of_account, user_id)

    def _of_account(self, user_id: int) -> list[PasskeyView]:
        with self.db.reading() as session:
            rows = session.exec(
                select(Passkey).where(col(Passkey.user_id) == user_id).order_by(col(Passkey.id))
            ).all()
        return [_view(row) for row in rows]

    # -- adding one --------------------------------------------------------------------

    async def registration_options(self, account: Account, *, browser: str) -> str:
        """PublicKeyCredentialCreationOptions as JSON: a discoverable credential with user
        verification, none of the account's own passkeys again. Built off the event loop
        (the first call imports py_webauthn: some 60 ms)."""
        handle, existing = await self.db.read(self._registration_state, account.id)
        return await asyncio.to_thread(self._creation_options, account, handle, existing, browser)

    def _creation_options(
        self,
        account: Account,
        handle: bytes | None,
        existing: list[PublicKeyCredentialDescriptor],
        browser: str,
    ) -> str:
        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers.structs import (
            AuthenticatorSelectionCriteria,
            ResidentKeyRequirement,
            UserVerificationRequirement,
        )

        handle = handle or secrets.token_bytes(HANDLE_BYTES)
        challenge = self.challenges.mint(
            "register", browser=browser, user_id=account.id, handle=handle
        )
        options = generate_registration_options(
            rp_id=self.rp.id,
            rp_name=self.rp.name,
            user_id=handle,
            user_name=account.username,
            user_display_name=account.username,
            challenge=challenge,
            timeout=CHALLENGE_LIFETIME * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=existing,
        )
        return options_to_json(options)

    def _registration_state(
        self, user_id: int
    ) -> tuple[bytes | None, list[PublicKeyCredentialDescriptor]]:
        from webauthn.helpers.structs import AuthenticatorTransport, PublicKeyCredentialDescriptor

        with self.db.reading() as session:
            rows = session.exec(select(Passkey).where(col(Passkey.user_id) == user_id)).all()
        handle = unb64url(rows[0].user_handle) if rows else None
        existing = [
            PublicKeyCredentialDescriptor(
                id=unb64url(row.credential_id),
                transports=[
                    AuthenticatorTransport(value)
                    for value in _transports(row.transports.split(","))
                ]
                or None,
            )
            for row in rows
        ]
        return handle, existing

    async def register(
        self, user_id: int, credential: dict[str, Any], name: str, *, browser: str, client: Client
    ) -> PasskeyView:
        """Check the created credential against a challenge this site gave this browser
        for this account, and store it. Raises InvalidInput (`passkey` or `name`)."""
        return await self.db.write(self._register, user_id, credential, name, browser, client)

    def _register(
        self,
        user_id: int,
        credential: dict[str, Any],
        name: str,
        browser: str,
        client: Client,
    ) -> PasskeyView:
        from webauthn import verify_registration_response

        rejected = InvalidInput({"passkey": NOT_ACCEPTED})
        try:
            challenge = challenge_of(credential)
        except ValueError:
            raise rejected from None
        minted = self.challenges.check(challenge, "register", browser=browser, user_id=user_id)
        if minted is None:
            raise rejected
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp.id,
                expected_origin=self.rp.origin,
                require_user_verification=True,
            )
        except malformed():
            raise rejected from None
        if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES or not usable_public_key(
            verified.credential_public_key
        ):
            raise rejected
        response = credential.get("response")
        transports = response.get("transports") if isinstance(response, dict) else None
        with self.db.writing() as session:
            # The account's row, locked: concurrent additions count one after another.
            user = session.exec(
                select(User).where(col(User.id) == user_id).with_for_update()
            ).first()
            if user is None:
                raise rejected
            held = session.exec(
                select(func.count()).select_from(Passkey).where(col(Passkey.user_id) == user_id)
            ).one()
            if held >= MAX_PASSKEYS:
                raise InvalidInput({"passkey": TOO_MANY})
            cleaned = clean_name(name, default=f"Passkey {int(held) + 1}")
            if not spend_in(session, challenge, minted):
                raise rejected
            credential_id = b64url(verified.credential_id)
            taken = session.exec(
                select(Passkey.id).where(col(Passkey.credential_id) == credential_id)
            ).first()
            if taken is not None:
                raise InvalidInput({"passkey": ALREADY_ADDED})
            row = Passkey(
                user_id=user_id,
                credential_id=credential_id,
                public_key=b64url(verified.credential_public_key),
                sign_count=verified.sign_count,
                transports=",".join(_transports(transports)),
                user_handle=b64url(minted.handle),
                name=cleaned,
                backed_up=verified.credential_backed_up,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                # The same credential, added by a concurrent request a moment ago.
                raise InvalidInput({"passkey": ALREADY_ADDED}) from None
            events.record(
                session, user_id=user_id, kind="passkey_added", client=client, detail=cleaned
            )
            self.emails.notify(
                session, user, "passkey_added", client=client, context={"passkey": cleaned}
            )
            return _view(row)

    # -- naming and removing -------------------------------------------------------------

    async def rename(self, user_id: int, passkey_id: int, name: str) -> PasskeyView:
        """A new name for one of the account's passkeys. A name is a label for its owner,
        not a security change: no event (the contract names no kind for it), no notice."""
        return await self.db.write(self._rename, user_id, passkey_id, clean_name(name))

    def _rename(self, user_id: int, passkey_id: int, name: str) -> PasskeyView:
        with self.db.writing() as session:
            row = self._own(session, user_id, passkey_id)
            row.name = name
            session.add(row)
            session.flush()
            return _view(row)

    async def remove(self, user_id: int, passkey_id: int, client: Client) -> str:
        """Remove one of the account's passkeys; its name. Raises PasskeyNotFound."""
        return await self.db.write(self._remove, user_id, passkey_id, client)

    def _remove(self, user_id: int, passkey_id: int, client: Client) -> str:
        with self.db.writing() as session:
            row = self._own(session, user_id, passkey_id)
            user = session.get(User, user_id)
            session.delete(row)
            if user is not None:
                events.record(
                    session, user_id=user_id, kind="passkey_removed", client=client, detail=row.name
                )
                self.emails.notify(
                    session, user, "passkey_removed", client=client, context={"passkey": row.name}
                )
            return row.name

    @staticmethod
    def _own(session: Session, user_id: int, passkey_id: int) -> Passkey:
        row = session.exec(
            select(Passkey)
            .where(col(Passkey.id) == passkey_id)
            .where(col(Passkey.user_id) == user_id)
            .with_for_update()
        ).first()
        if row is None:
            raise PasskeyNotFound
        return row

    async def remove_all(self, user_id: int, client: Client) -> int:
        """Every passkey of the account (the operator's disable-two-factor); how many."""
        return await self.db.write(self._remove_all, user_id, client)

    def _remove_all(self, user_id: int, client: Client) -> int:
        with self.db.writing() as session:
            names = session.exec(select(Passkey.name).where(col(Passkey.user_id) == user_id)).all()
            session.exec(delete(Passkey).where(col(Passkey.user_id) == user_id))
            for name in names:
                events.record(
                    session, user_id=user_id, kind="passkey_removed", client=client, detail=name
                )
            user = session.get(User, user_id)
            if names and user is not None:
                self.emails.notify(
                    session,
                    user,
                    "passkey_removed",
                    client=client,
                    context={"passkey": ", ".join(names)},
                )
            return len(names)

    # -- signing in ----------------------------------------------------------------------

    async def signin_options(self, *, browser: str) -> str:
        """PublicKeyCredentialRequestOptions as JSON, without allowCredentials: the browser
        offers whichever of the user's passkeys are for this site. Writes nothing; built
        off the event loop, as the creation options are."""
        return await asyncio.to_thread(self._request_options, browser)

    def _request_options(self, browser: str) -> str:
        from webauthn import generate_authentication_options
        from webauthn.helpers import options_to_json_dict
        from webauthn.helpers.structs import UserVerificationRequirement

        options = generate_authentication_options(
            rp_id=self.rp.id,
            challenge=self.challenges.mint("signin", browser=browser, user_id=None),
            timeout=CHALLENGE_LIFETIME * 1000,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        document = options_to_json_dict(options)
        # No list at all (py_webauthn writes an empty one): any passkey for this site will do.
        document.pop("allowCredentials", None)
        return json.dumps(document)

    async def sign_in(
        self,
        credential: dict[str, Any],
        *,
        browser: str,
        client: Client,
        remember: bool = False,
        replaces: str | None = None,
    ) -> NewSession:
        """Check an assertion and open a session. Raises PasskeyRejected (401) or Throttled.

        `replaces` is the session this browser had, ended in the same transaction as the
        new one opens (as a password sign-in does)."""
        limits = self.throttle.passkey_limits(client)
        outcome = await self.db.write(self._check_assertion, credential, browser, limits, client)
        if isinstance(outcome, DomainError):
            raise outcome
        return await self.sessions.open_checked(
            outcome.user,
            client,
            outcome.reservation,
            remember=remember,
            replaces=replaces,
            detail="with a passkey",
        )

    async def reauthenticate(
        self,
        credential: dict[str, Any],
        *,
        user_id: int,
        session_id: str,
        browser: str,
        client: Client,
    ) -> None:
        """A passkey of this account entered again in this session ("recent
        authentication", as /reauth's password does). Raises PasskeyRejected (counted as a
        failed sign-in), Throttled, or AccountGone when the session has ended."""
        limits = self.throttle.passkey_limits(client)
        outcome = await self.db.write(
            self._check_assertion, credential, browser, limits, client, user_id
        )
        if isinstance(outcome, PasskeyRejected):
            raise outcome
        if isinstance(outcome, _Accepted):
            await self.throttle.release(outcome.reservation)
        await self.sessions.confirm_authentication(session_id, user_id)

    def _check_assertion(
        self,
        credential: dict[str, Any],
        browser: str,
        limits: list[throttle.Limit],
        client: Client,
        only_user: int | None = None,
    ) -> _Accepted | PasskeyRejected | EmailNotVerified:
        """One transaction: count the attempt, spend the challenge, check the assertion
        against the locked credential and move its sign count on. A rejection is returned,
        not raised, so the count and the spent challenge are committed."""
        from webauthn import verify_authentication_response
        from webauthn.helpers.exceptions import WebAuthnException

        now = utcnow()
        with self.db.writing() as session:
            reservation = throttle.reserve_in(session, limits, action="signin", now=now)
            try:
                challenge = challenge_of(credential)
                raw_id = unb64url(credential.get("rawId") or credential.get("id") or "")
            except (ValueError, TypeError):
                return PasskeyRejected("not an assertion")
            if len(raw_id) > MAX_CREDENTIAL_ID_BYTES:
                return PasskeyRejected("not a credential id")
            minted = self.challenges.check(challenge, "signin", browser=browser, user_id=None)
            if minted is None:
                return PasskeyRejected("not our challenge")
            if not spend_in(session, challenge, minted):
                return PasskeyRejected("challenge answered before")
            row = session.exec(
                select(Passkey)
                .where(col(Passkey.credential_id) == b64url(raw_id))
                .with_for_update()
            ).first()
            if row is None:
                return PasskeyRejected("unknown credential")
            if not self._handle_matches(credential, row):
                return self._refuse(session, row, client, "a passkey of another account")
            if only_user is not None and row.user_id != only_user:
                # Another account's passkey cannot confirm this one's session.
                return PasskeyRejected("a passkey of another account")
            try:
                verified = verify_authentication_response(
                    credential=credential,
                    expected_challenge=challenge,
                    expected_rp_id=self.rp.id,
                    expected_origin=self.rp.origin,
                    credential_public_key=unb64url(row.public_key),
                    credential_current_sign_count=row.sign_count,
                    require_user_verification=True,
                )
            except WebAuthnException as exc:
                went_back = "sign count" in str(exc).lower()
                detail = (
                    "passkey sign count went backwards: it may have been copied"
                    if went_back
                    else "passkey not accepted"
                )
                return self._refuse(session, row, client, detail)
            except malformed():
                return self._refuse(session, row, client, "passkey not accepted")
            user = session.get(User, row.user_id)
            if user is None:
                return PasskeyRejected("account gone")
            row.sign_count = verified.new_sign_count
            row.backed_up = verified.credential_backed_up
            row.last_used_at = now
            session.add(row)
            if only_user is None and self.require_confirmed_email and not user.email_verified_at:
                throttle.release_in(session, reservation)
                self.emails.send_verification_for_signin(session, user)
                return EmailNotVerified()
            return _Accepted(user, reservation)

    @staticmethod
    def _handle_matches(credential: dict[str, Any], row: Passkey) -> bool:
        """The account handle the authenticator sent, when it sent one, is the row's."""
        response = credential.get("response")
        handle = response.get("userHandle") if isinstance(response, dict) else None
        if not handle:
            return True
        try:
            return hmac.compare_digest(unb64url(handle), unb64url(row.user_handle))
        except (ValueError, TypeError):
            return False

    @staticmethod
    def _refuse(session: Session, row: Passkey, client: Client, detail: str) -> PasskeyRejected:
        events.record(
            session, user_id=row.user_id, kind="signin_failed", client=client, detail=detail
        )
        return PasskeyRejected(detail)
