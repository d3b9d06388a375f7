"""JWT verification (CDS Hooks 'Trusting CDS Clients'): each attack is rejected."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.db import Repository
from cds_hooks.security import AuthError, JWKSCache, TokenClaims, TokenVerifier
from tests.cds_hooks.http_fixtures import static_server
from tests.cds_hooks.jwt_keys import (
    ISSUER,
    SigningKeys,
    hs256_with_public_key,
    make_keys,
    unsigned_token,
)

AUD = "http://127.0.0.1:8080/cds-services/patient-view"


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    return make_keys(tmp_path)


@pytest.fixture
def verifier(keys: SigningKeys, tmp_path: Path) -> TokenVerifier:
    repo = Repository.open(f"sqlite:///{tmp_path / 'auth.db'}")

    async def remember(iss: str, jti: str, exp: datetime) -> bool:
        return repo.remember_jti(iss, jti, exp)

    return TokenVerifier(
        trusted_issuers={ISSUER: str(keys.jwks_path)},
        algorithms=["ES384", "RS384"],
        jwks=JWKSCache(ttl_s=60),
        remember_jti=remember,
        leeway_s=5,
        max_age_s=600,
    )


def _verify(verifier: TokenVerifier, header: str | None) -> TokenClaims:
    return asyncio.run(verifier.verify(header, [AUD]))


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_token_is_accepted(verifier: TokenVerifier, keys: SigningKeys, alg: str) -> None:
    claims = _verify(verifier, f"Bearer {keys.token(AUD, alg=alg)}")
    assert claims.issuer == ISSUER


def test_aud_as_array_is_accepted(verifier: TokenVerifier, keys: SigningKeys) -> None:
    assert _verify(verifier, f"Bearer {keys.token([AUD])}")


def test_missing_token_is_rejected(verifier: TokenVerifier) -> None:
    with pytest.raises(AuthError, match="missing"):
        _verify(verifier, None)


def test_non_bearer_scheme_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    with pytest.raises(AuthError, match="Bearer"):
        _verify(verifier, f"Basic {keys.token(AUD)}")


def test_expired_token_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    with pytest.raises(AuthError, match="expired"):
        _verify(verifier, f"Bearer {keys.token(AUD, iat_offset=-400, exp_in=300)}")


def test_token_issued_in_the_future_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    with pytest.raises(AuthError):
        _verify(verifier, f"Bearer {keys.token(AUD, iat_offset=120)}")


def test_wrong_audience_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    token = keys.token("http://127.0.0.1:8080/cds-services/other-service")
    with pytest.raises(AuthError, match="aud"):
        _verify(verifier, f"Bearer {token}")


def test_unknown_issuer_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    with pytest.raises(AuthError, match="allowlist"):
        _verify(verifier, f"Bearer {keys.token(AUD, iss='https://evil.example.org')}")


def test_alg_none_is_rejected(verifier: TokenVerifier) -> None:
    with pytest.raises(AuthError, match="algorithm 'none'"):
        _verify(verifier, f"Bearer {unsigned_token(AUD)}")


def test_hs256_signed_with_public_key_is_rejected(
    verifier: TokenVerifier, keys: SigningKeys
) -> None:
    with pytest.raises(AuthError, match="HS256"):
        _verify(verifier, f"Bearer {hs256_with_public_key(keys, AUD)}")


def test_replayed_jti_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    token = keys.token(AUD, jti="once-only")
    _verify(verifier, f"Bearer {token}")
    with pytest.raises(AuthError, match="replay"):
        _verify(verifier, f"Bearer {token}")


def test_unknown_kid_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    with pytest.raises(AuthError, match="kid"):
        _verify(verifier, f"Bearer {keys.token(AUD, kid='rotated-away')}")


def test_key_of_other_type_than_alg_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    # RS384 signature, but the header points at the EC key
    with pytest.raises(AuthError):
        _verify(verifier, f"Bearer {keys.token(AUD, alg='RS384', kid='ec-1')}")


def test_foreign_jku_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    token = keys.token(AUD, extra_headers={"jku": "https://evil.example.org/jwks"})
    with pytest.raises(AuthError, match="jku"):
        _verify(verifier, f"Bearer {token}")


def test_tampered_signature_is_rejected(verifier: TokenVerifier, keys: SigningKeys) -> None:
    head, body, sig = keys.token(AUD).split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    with pytest.raises(AuthError):
        _verify(verifier, f"Bearer {forged}")


def test_settings_refuse_symmetric_algorithms() -> None:
    from pydantic import ValidationError

    from cds_hooks.config import Settings

    with pytest.raises(ValidationError, match="symmetric"):
        Settings(jwt_algorithms=["ES384", "HS256"])


def test_jwks_from_url_is_cached_until_its_ttl(keys: SigningKeys, tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            hits.append(self.path)

    handler = functools.partial(Handler, directory=str(keys.jwks_path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{keys.jwks_path.name}"
        repo = Repository.open(f"sqlite:///{tmp_path / 'url.db'}")

        async def remember(iss: str, jti: str, exp: datetime) -> bool:
            return repo.remember_jti(iss, jti, exp)

        verifier = TokenVerifier(
            trusted_issuers={ISSUER: url},
            algorithms=["ES384"],
            jwks=JWKSCache(ttl_s=300),
            remember_jti=remember,
        )
        for _ in range(3):
            assert _verify(verifier, f"Bearer {keys.token(AUD)}").issuer == ISSUER
        assert len(hits) == 1  # fetched once, then served from the cache
    finally:
        server.shutdown()
        server.server_close()


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unknown_kids_reload_the_jwks_at_most_once_per_min_interval(
    keys: SigningKeys, tmp_path: Path
) -> None:
    """Tokens with made-up kids must not each make the service fetch the issuer's JWKS."""
    jwks = keys.jwks_path.read_bytes()
    repo = Repository.open(f"sqlite:///{tmp_path / 'kid.db'}")

    async def remember(iss: str, jti: str, exp: datetime) -> bool:
        return repo.remember_jti(iss, jti, exp)

    clock = _Clock()
    with static_server({"/jwks.json": (jwks, "application/json")}) as (origin, seen):
        verifier = TokenVerifier(
            trusted_issuers={ISSUER: f"{origin}/jwks.json"},
            algorithms=["ES384"],
            jwks=JWKSCache(ttl_s=300, min_refresh_s=60, clock=clock),
            remember_jti=remember,
        )

        async def attempts(n: int) -> None:
            for i in range(n):
                with pytest.raises(AuthError, match="kid"):
                    await verifier.verify(f"Bearer {keys.token(AUD, kid=f'made-up-{i}')}", [AUD])

        asyncio.run(attempts(10))
        assert len(seen.requests) == 1  # the first load only; no refresh per unknown kid
        assert _verify(verifier, f"Bearer {keys.token(AUD)}").issuer == ISSUER  # still works
        clock.now += 61  # after the interval a rotated key can be picked up again
        asyncio.run(attempts(3))
        assert len(seen.requests) == 2


def test_min_refresh_interval_comes_from_settings(
    tmp_path: Path, keys: SigningKeys, demo_model: Any
) -> None:
    from cds_hooks.config import Settings
    from cds_hooks.main import _build_state

    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 's.db'}",
        trusted_issuers={ISSUER: str(keys.jwks_path)},
        jwks_min_refresh_s=17,
    )
    state = asyncio.run(_build_state(settings, demo_model))
    assert state.verifier is not None and state.verifier.jwks.min_refresh_s == 17
    state.repository.db.dispose()
