"""AWS Signature Version 4 verification for requests to the KMS endpoint.

Follows the SigV4 spec: canonical request (method, URI, query, signed headers,
SHA-256 of the body we received), string to sign, HMAC chain signing key, and a
constant-time comparison. Signing keys are cached per key, date and region; the
region is checked first (one botocore knows, and one served), so nothing a client
makes up is cached. Whatever bytes a header holds, the answer is a KMS error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from hsmkms.api.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from hsmkms.config import is_known_region
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.policy.caller import Credential
from hsmkms.policy.principals import ACCESS_KEY_ID  # XKS credentials' ids fit it too

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_AUTH_PART = re.compile(r"(\w+)=([^,\s]+)")
_SPACES = re.compile(r"\s+")
MAX_SIGNING_KEYS = 10_000
SESSION_TOKEN_REFUSED = (
    "The security token included in the request is invalid. hsmkms does not use session "
    "tokens (X-Amz-Security-Token): unset AWS_SESSION_TOKEN and sign with a long-term "
    "access key."
)


@dataclass(frozen=True)
class Caller:
    """Who signed a request, and in which region."""

    principal_arn: str
    access_key_id: str
    region: str


CredentialLookup = Callable[[str], Credential | None]
Headers = Mapping[str, Sequence[str]]  # lower-case name -> every value given


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _parse_amz_date(value: str) -> datetime:
    """YYYYMMDDTHHMMSSZ, parsed by slicing (strptime costs more than the HMACs)."""
    try:
        if len(value) != 16 or value[8] != "T" or value[15] != "Z":
            raise ValueError(value)
        return datetime(
            int(value[0:4]), int(value[4:6]), int(value[6:8]),
            int(value[9:11]), int(value[11:13]), int(value[13:15]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        raise IncompleteSignatureException(f"X-Amz-Date {value!r} is not valid.") from None


class SigV4Verifier:
    def __init__(
        self,
        lookup: CredentialLookup,
        *,
        service: str = "kms",
        regions: Sequence[str] = (),
        clock: Clock = system_clock,
        on_verified: Callable[[str, str], None] | None = None,
    ) -> None:
        """`on_verified(access_key_id, region)`: told of each verified signature (a key's
        last use); never of a request whose signature did not verify."""
        self._lookup = lookup
        self._on_verified = on_verified
        self._service = service
        self._regions = frozenset(regions)
        self._clock = clock
        self._keys: dict[tuple[str, str, str, str], bytes] = {}
        self._lock = threading.Lock()

    def _signing_key(self, credential: Credential, date: str, region: str) -> bytes:
        cache_key = (credential.access_key_id, credential.secret_access_key, date, region)
        key = self._keys.get(cache_key)
        if key is None:
            key = _hmac(f"AWS4{credential.secret_access_key}".encode(), date)
            for part in (region, self._service, "aws4_request"):
                key = _hmac(key, part)
            with self._lock:
                if len(self._keys) >= MAX_SIGNING_KEYS:
                    self._keys.clear()
                self._keys[cache_key] = key
        return key

    @property
    def cached_signing_keys(self) -> int:
        return len(self._keys)

    def _check_region(self, region: str) -> None:
        """A region served (HSMKMS_REGIONS), or else one botocore knows: AWS's answer
        for any other, before anything is looked up or cached for it."""
        allowed = region in self._regions if self._regions else is_known_region(region)
        if not allowed:
            raise InvalidSignatureException(
                f"Credential should be scoped to a valid region, not '{region[:64]}'."
            )

    def verify(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> Caller:
        authorization = headers.get("authorization")
        if not authorization:
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        header = authorization[0]
        if not header.startswith(ALGORITHM + " "):
            raise IncompleteSignatureException(
                f"Authorization header requires the {ALGORITHM} algorithm."
            )
        parts = dict(_AUTH_PART.findall(header[len(ALGORITHM) :]))
        for required in ("Credential", "SignedHeaders", "Signature"):
            if required not in parts:
                raise IncompleteSignatureException(
                    f"Authorization header requires '{required}' parameter. "
                    f"Authorization={header.split(' ')[0]}"
                )
        scope = parts["Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise IncompleteSignatureException(
                "Credential must have exactly 5 slash-delimited elements."
            )
        access_key_id, date, region, service, _ = scope
        if service != self._service:
            raise InvalidSignatureException(
                f"Credential should be scoped to correct service: '{self._service}'."
            )
        self._check_region(region)
        signed = parts["SignedHeaders"].split(";")
        if "host" not in signed:
            raise InvalidSignatureException("'Host' must be a signed header.")
        amz_date = (headers.get("x-amz-date") or [""])[0]
        if "x-amz-date" not in signed or not amz_date:
            raise IncompleteSignatureException("Authorization header requires a signed X-Amz-Date.")
        # A captured request must not be replayable as another operation (X-Amz-Target)
        # or with other AWS parameters: every x-amz-* header sent must be signed, as
        # the AWS SDKs and CLI do.
        unsigned = sorted(h for h in headers if h.startswith("x-amz-") and h not in signed)
        if unsigned:
            raise IncompleteSignatureException(
                "There were headers present in the request which were not signed: "
                + ", ".join(unsigned)
            )
        when = _parse_amz_date(amz_date)
        now = self._clock()
        if abs(now - when) > MAX_SKEW:
            raise InvalidSignatureException(
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')} "
                f"({now.strftime('%Y%m%dT%H%M%SZ')} - 5 min.)"
                if when < now
                else f"Signature not yet current: {amz_date} is still later than "
                f"{(now + MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')}"
            )
        if date != amz_date[:8]:
            raise InvalidSignatureException("Credential date does not match X-Amz-Date.")
        if "x-amz-security-token" in headers:
            # Temporary credentials (STS) are not issued by hsmkms; clients send the
            # token when AWS_SESSION_TOKEN is set (after `aws sso login`, for one).
            raise UnrecognizedClientException(SESSION_TOKEN_REFUSED)
        credential = self._lookup(access_key_id) if ACCESS_KEY_ID.match(access_key_id) else None
        if credential is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )

        canonical_headers = "".join(
            f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in headers.get(name, ()))}\n"
            for name in signed
        )
        canonical_request = "\n".join(
            (
                method,
                quote(path or "/", safe="/-_.~"),
                _canonical_query(query),
                canonical_headers,
                parts["SignedHeaders"],
                hashlib.sha256(body).hexdigest(),
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                amz_date,
                f"{date}/{region}/{service}/aws4_request",
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            )
        )
        expected = hmac.new(
            self._signing_key(credential, date, region), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        # Bytes: compare_digest refuses str with non-ASCII characters (headers are latin-1).
        if not hmac.compare_digest(expected.encode(), parts["Signature"].encode()):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service "
                "documentation for details."
            )
        if self._on_verified is not None:
            self._on_verified(access_key_id, region)
        return Caller(credential.principal_arn, access_key_id, region)


def claimed_access_key_id(headers: Headers) -> str | None:
    """The access key id an Authorization header names, unverified (for the audit
    record of a request refused before its signature could be checked); None unless
    it has the shape of one."""
    authorization = (headers.get("authorization") or [""])[0]
    credential = dict(_AUTH_PART.findall(authorization)).get("Credential", "")
    access_key_id = credential.partition("/")[0]
    return access_key_id if ACCESS_KEY_ID.match(access_key_id) else None
