"""EHR authentication per CDS Hooks 2.0 ("Trusting CDS Clients").

Each call carries ``Authorization: Bearer <JWT>`` signed with the EHR's private key.
Verification, in order (each failure is an ``AuthError`` -> HTTP 401):

1. the header names an allowed asymmetric ``alg`` (``none`` and HMAC are refused, so a
   token "signed" with the public key as an HMAC secret never verifies) and a ``kid``;
2. ``iss`` is on the allowlist; a ``jku`` header, if any, must be that issuer's
   configured JWKS location (never fetched from the token);
3. the signature verifies with the issuer's key ``kid`` from its JWKS (file or URL,
   cached for ``jwks_cache_ttl_s``), and the key type fits ``alg``;
4. ``aud`` is the URL being called; ``exp``, ``iat`` and ``jti`` are present; ``exp`` and
   ``iat`` hold within ``jwt_leeway_s``; ``iat`` is at most ``jwt_max_age_s`` old;
5. ``jti`` was never seen before for that issuer (stored until the token expires).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

__all__ = ["AuthError", "JWKSCache", "TokenClaims", "TokenVerifier"]

# Which key type each JWS algorithm family needs.
_KEY_TYPES = {"ES": "EC", "RS": "RSA", "PS": "RSA", "Ed": "OKP"}


class AuthError(Exception):
    """The caller is not authenticated; the message says why (no secrets in it)."""


@dataclass(frozen=True, slots=True)
class _Key:
    pyjwk: jwt.PyJWK
    kty: str
    jwk_alg: str | None  # the JWK's own "alg", when it names one


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token told us about the caller."""

    issuer: str
    jti: str
    expires_at: datetime
    tenant: str | None = None


class JWKSCache:
    """JWK Sets per location (https URL or local file), cached for ``ttl_s`` seconds.

    A forced refresh (a token names a ``kid`` the cached set lacks, e.g. after key
    rotation) reloads a location at most once per ``min_refresh_s``: otherwise every
    token with a made-up ``kid`` would make this service fetch the issuer's JWKS, which
    lets anyone turn it into a request amplifier against the issuer.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        min_refresh_s: float = 60.0,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, _Key]]] = {}
        self._lock = asyncio.Lock()

    def _fresh(self, location: str, refresh: bool) -> dict[str, _Key] | None:
        """The cached set when it may be used as is, else ``None`` (load it)."""
        hit = self._cache.get(location)
        if hit is None:
            return None
        age = self._clock() - hit[0]
        if age < (self.min_refresh_s if refresh else self.ttl_s):
            return hit[1]
        return None

    async def keys(self, location: str, *, refresh: bool = False) -> dict[str, _Key]:
        """``kid`` -> key for the set at ``location`` (``refresh``: reload unless the set
        was loaded less than ``min_refresh_s`` ago)."""
        cached = self._fresh(location, refresh)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._fresh(location, refresh)  # loaded while we waited for the lock
            if cached is not None:
                return cached
            raw = await self._load(location)
            keys = _parse_jwks(raw, location)
            self._cache[location] = (self._clock(), keys)
            return keys

    async def _load(self, location: str) -> Any:
        if location.startswith(("https://", "http://")):
            try:
                async with httpx.AsyncClient(
                    timeout=self.timeout_s, transport=self._transport
                ) as client:
                    resp = await client.get(location, headers={"Accept": "application/json"})
                    resp.raise_for_status()
                    return resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AuthError(f"JWKS for the issuer could not be loaded: {exc}") from exc
        try:
            return orjson.loads(Path(location).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise AuthError(f"JWKS file {location} could not be read: {exc}") from exc


def _parse_jwks(raw: Any, location: str) -> dict[str, _Key]:
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
        raise AuthError(f"JWKS at {location} has no 'keys' array")
    keys: dict[str, _Key] = {}
    for jwk in raw["keys"]:
        if not isinstance(jwk, dict) or "kid" not in jwk:
            continue
        if jwk.get("kty") == "oct":  # a shared secret never authenticates a CDS client
            continue
        try:
            alg = jwk.get("alg")
            keys[str(jwk["kid"])] = _Key(
                jwt.PyJWK(jwk), str(jwk.get("kty")), str(alg) if alg else None
            )
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
    return keys


ReplayCheck = Callable[[str, str, datetime], Awaitable[bool]]


class TokenVerifier:
    """Verifies CDS client JWTs against an issuer allowlist (see module docstring)."""

    def __init__(
        self,
        *,
        trusted_issuers: dict[str, str],
        algorithms: Sequence[str],
        jwks: JWKSCache,
        remember_jti: ReplayCheck,
        leeway_s: int = 30,
        max_age_s: int = 600,
    ) -> None:
        self.trusted_issuers = dict(trusted_issuers)
        self.algorithms = [a for a in algorithms if a != "none" and not a.startswith("HS")]
        self.jwks = jwks
        self.remember_jti = remember_jti
        self.leeway_s = leeway_s
        self.max_age_s = max_age_s

    async def verify(self, authorization: str | None, audience: Sequence[str]) -> TokenClaims:
        """Claims of a valid token in an ``Authorization`` header value, else ``AuthError``."""
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed JWT: {exc}") from exc
        alg = str(header.get("alg", ""))
        if alg not in self.algorithms:
            raise AuthError(
                f"JWT algorithm {alg!r} is not accepted; use one of {self.algorithms}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("JWT header has no 'kid'")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.trusted_issuers:
            raise AuthError("JWT issuer is not on the allowlist")
        location = self.trusted_issuers[issuer]
        jku = header.get("jku")
        if jku is not None and jku != location:
            raise AuthError("JWT 'jku' is not the issuer's configured JWK Set")

        keys = await self.jwks.keys(location)
        if kid not in keys:  # keys may have rotated: refresh once
            keys = await self.jwks.keys(location, refresh=True)
        key = keys.get(kid)
        if key is None:
            raise AuthError("no key with the JWT's 'kid' in the issuer's JWK Set")
        expected_kty = _KEY_TYPES.get(alg[:2])
        if expected_kty is None or key.kty != expected_kty:
            raise AuthError(f"key {kid!r} ({key.kty}) does not fit algorithm {alg}")
        jwk_alg = key.jwk_alg
        if jwk_alg is not None and jwk_alg != alg:
            raise AuthError(f"key {kid!r} is for {jwk_alg}, the JWT says {alg}")

        try:
            claims = jwt.decode(
                token,
                key=key.pyjwk.key,
                algorithms=[alg],
                audience=list(audience),
                issuer=issuer,
                leeway=self.leeway_s,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("JWT has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("JWT 'aud' is not the URL of this endpoint") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"JWT rejected: {exc}") from exc

        now = time.time()
        iat = float(claims["iat"])
        if now - iat > self.max_age_s + self.leeway_s:
            raise AuthError("JWT was issued too long ago")
        jti = str(claims["jti"])
        expires_at = datetime.fromtimestamp(float(claims["exp"]) + self.leeway_s, tz=UTC)
        if not await self.remember_jti(issuer, jti, expires_at):
            raise AuthError("JWT 'jti' was already used (replay)")
        tenant = claims.get("tenant")
        return TokenClaims(
            issuer=issuer, jti=jti, expires_at=expires_at,
            tenant=str(tenant) if tenant is not None else None,
        )


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("missing 'Authorization: Bearer <JWT>' header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <JWT>'")
    return token.strip()
