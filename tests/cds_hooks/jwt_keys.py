"""Test-side EHR signing keys and a JWT factory (what a CDS client would do)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://ehr.example.org"


@dataclass
class SigningKeys:
    ec_private: ec.EllipticCurvePrivateKey
    rsa_private: rsa.RSAPrivateKey
    jwks_path: Path

    def ec_public_pem(self) -> bytes:
        return self.ec_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self,
        aud: str | list[str],
        *,
        alg: str = "ES384",
        iss: str = ISSUER,
        exp_in: int = 300,
        iat_offset: int = 0,
        jti: str | None = None,
        kid: str | None = None,
        extra_headers: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": iss,
            "aud": aud,
            "iat": now + iat_offset,
            "exp": now + iat_offset + exp_in,
            "jti": jti or str(uuid.uuid4()),
        }
        key: Any = self.ec_private if alg.startswith("ES") else self.rsa_private
        headers = {"kid": kid or ("ec-1" if alg.startswith("ES") else "rsa-1"), "typ": "JWT"}
        headers.update(extra_headers or {})
        return jwt.encode(claims, key, algorithm=alg, headers=headers)


def make_keys(folder: Path) -> SigningKeys:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    ec_jwk.update({"kid": "ec-1", "alg": "ES384", "use": "sig"})
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    rsa_jwk.update({"kid": "rsa-1", "alg": "RS384", "use": "sig"})
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_jwk, rsa_jwk]}))
    return SigningKeys(ec_key, rsa_key, path)


def unsigned_token(aud: str) -> str:
    """A token with ``alg: none`` (no signature)."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "ec-1"})  # type: ignore[arg-type]


def hs256_with_public_key(keys: SigningKeys, aud: str) -> str:
    """The classic key-confusion attack: HMAC 'signed' with the public key as secret."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "ec-1"}
    claims = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(keys.ec_public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"
