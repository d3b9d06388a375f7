"""SMART Backend Services authorisation as an ``httpx.Auth`` (works sync and async).

The client signs a short-lived JWT (RS384 or ES384, ``iss`` = ``sub`` = client id,
``aud`` = token endpoint, unique ``jti``, ``exp`` <= 5 minutes) with its private key,
posts it to the token endpoint (``grant_type=client_credentials``,
``client_assertion_type=...jwt-bearer``) and caches the access token until shortly
before it expires. A 401 on a FHIR request drops the cached token and retries once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fhir_adapters.client import AuthTokenError

__all__ = ["ASSERTION_TYPE", "SmartBackendAuth", "discover_token_endpoint"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 240  # servers reject exp more than 5 minutes ahead
_EXPIRY_MARGIN_S = 30  # refresh this long before the token expires
_ALGS = frozenset({"RS384", "ES384"})


def discover_token_endpoint(fhir_base: str, client: httpx.Client | None = None) -> str:
    """``token_endpoint`` from ``[base]/.well-known/smart-configuration``."""
    own = client is None
    http = client or httpx.Client(timeout=30.0)
    try:
        url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
        response = http.get(url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise AuthTokenError(f"no SMART configuration at {url} (HTTP {response.status_code})")
        endpoint = orjson.loads(response.content).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise AuthTokenError(f"SMART configuration at {url} has no token_endpoint")
        return endpoint
    finally:
        if own:
            http.close()


class SmartBackendAuth(httpx.Auth):
    """Bearer tokens from a SMART token endpoint, obtained with a signed client assertion."""

    requires_response_body = True

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key_pem: bytes,
        scope: str = "system/*.read",
        alg: str | None = None,
        kid: str | None = None,
    ) -> None:
        key = load_pem_private_key(private_key_pem, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            default_alg = "RS384"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            default_alg = "ES384"
        else:
            raise ValueError(f"unsupported private key type {type(key).__name__}")
        self.alg = alg or default_alg
        if self.alg not in _ALGS:
            raise ValueError(f"alg must be one of {sorted(_ALGS)}, got {self.alg!r}")
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.kid = kid
        self._key = key
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    def client_assertion(self) -> str:
        """A fresh signed JWT for the token endpoint."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME_S,
        }
        headers = {"typ": "JWT", **({"kid": self.kid} if self.kid else {})}
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        return httpx.Request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )

    def _accept_token(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise AuthTokenError(
                f"token endpoint {self.token_url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            body: Any = orjson.loads(response.content)
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise AuthTokenError(f"bad token response from {self.token_url}") from exc
        with self._lock:
            self._token = str(token)
            self._expires = time.monotonic() + max(0.0, lifetime - _EXPIRY_MARGIN_S)
            self.tokens_fetched += 1

    def _valid_token(self) -> str | None:
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            return None

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._valid_token()
        if token is None:
            self._accept_token((yield self.token_request()))
            token = self._valid_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate()
            self._accept_token((yield self.token_request()))
            request.headers["Authorization"] = f"Bearer {self._valid_token()}"
            yield request
