"""Credentials: signed connection tokens for WebSocket clients, API keys for backend services."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import jwt

from diagnoxix.models import ApiKey
from diagnoxix.rules import is_valid_token_id, is_valid_user_id
from diagnoxix.store.protocols import DeviceStore, Store

TOKEN_ISSUER = "diagnoxix-notify"  # noqa: S105 - a name, not a secret
# The audience pins a token to its one use: a connection token is useless as anything else.
TOKEN_AUDIENCE = "diagnoxix-notify:ws"  # noqa: S105 - a name, not a secret
# Tolerated clock difference between the server that minted a token and the one checking it.
TOKEN_LEEWAY_SECONDS = 5
API_KEY_PREFIX = "dxn"
# A key's last use is written at most this often, so authentication adds no write per request.
TOUCH_INTERVAL_SECONDS = 60.0


class InvalidCredentials(Exception):
    """A token or key was presented but cannot be accepted; the message says why (no secrets)."""


def generate_secret() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True, slots=True)
class ConnectionToken:
    token: str
    user_id: str
    expires_at: datetime
    # The token's `jti`: the device it stands for, which can be listed and revoked.
    token_id: str
    issued_at: datetime


class RevocationList(Protocol):
    """The revoked token ids this process knows (`delivery.revocations.RevokedTokens`)."""

    def is_revoked(self, token_id: str) -> bool: ...


class TokenIssuer:
    """Mints and verifies connection tokens (JWT, HS256, `sub` = user id, `jti` = device, expiring).

    With `revoked`, a revoked token is refused wherever a token is checked (handshake, HTTP,
    refresh frame) by a lookup in memory: no database read per check.
    """

    def __init__(
        self, secret: str, *, default_ttl: int, max_ttl: int, revoked: RevocationList | None = None
    ) -> None:
        self._secret = secret
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._revoked = revoked

    def mint(self, user_id: str, ttl: int | None = None) -> ConnectionToken:
        if not is_valid_user_id(user_id):
            raise ValueError("invalid user id")
        lifetime = self.default_ttl if ttl is None else ttl
        if not 1 <= lifetime <= self.max_ttl:
            raise ValueError(f"ttl must be between 1 and {self.max_ttl} seconds")
        now = int(time.time())
        claims = {
            "sub": user_id,
            "iat": now,
            "exp": now + lifetime,
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return ConnectionToken(
            token,
            user_id,
            datetime.fromtimestamp(now + lifetime, UTC),
            str(claims["jti"]),
            datetime.fromtimestamp(now, UTC),
        )

    def verify(self, token: str) -> ConnectionToken:
        # A JWT is ASCII. A byte off the wire that is not UTF-8 reaches here as a lone surrogate,
        # which PyJWT cannot even encode (UnicodeEncodeError, not one of its own errors).
        if not token.isascii():
            raise InvalidCredentials("the connection token is invalid")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                # Only HS256: never let the token choose its own algorithm ("none", RS/HS confusion).
                algorithms=["HS256"],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                leeway=TOKEN_LEEWAY_SECONDS,
                # `jti` is checked below instead: an expired token is told that it expired.
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the connection token has expired") from None
        except jwt.InvalidTokenError:
            raise InvalidCredentials("the connection token is invalid") from None
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or not is_valid_user_id(user_id):
            raise InvalidCredentials("the connection token names no valid user")
        token_id = claims.get("jti")
        if not is_valid_token_id(token_id):
            raise InvalidCredentials("the connection token is invalid")
        assert isinstance(token_id, str)
        if self._revoked is not None and self._revoked.is_revoked(token_id):
            raise InvalidCredentials("the connection token has been revoked")
        return ConnectionToken(
            token,
            user_id,
            datetime.fromtimestamp(int(claims["exp"]), UTC),
            token_id,
            datetime.fromtimestamp(int(claims["iat"]), UTC),
        )

    def is_revoked(self, token_id: str) -> bool:
        """For a connection that was checked just before a revocation arrived."""
        return self._revoked is not None and self._revoked.is_revoked(token_id)


async def mint_device_token(
    issuer: TokenIssuer, store: DeviceStore, user_id: str, ttl: int | None = None
) -> ConnectionToken:
    """Mint a token and record its device, so it can be listed and revoked from the start."""
    minted = issuer.mint(user_id, ttl)
    await store.record_device(minted.token_id, user_id, minted.issued_at, minted.expires_at)
    return minted


def _hash_secret(secret: str) -> str:
    # API key secrets are 256 random bits, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """Creates, checks and revokes API keys (`dxn_<id>_<secret>`); only hashes are stored."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_touch: dict[str, float] = {}

    async def create(self, name: str) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = await self._store.create_api_key(key_id, name, _hash_secret(secret))
        return key, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    async def authenticate(self, presented: str) -> ApiKey:
        parts = presented.split("_", 2)
        # Every key we issue is ASCII; anything else (a lone surrogate from a byte that is not
        # UTF-8) could neither be looked up nor hashed.
        well_formed = len(parts) == 3 and parts[0] == API_KEY_PREFIX and all(parts[1:])
        if not presented.isascii() or not well_formed:
            raise InvalidCredentials("the API key is malformed")
        found = await self._store.find_api_key(parts[1])
        # Compare even when the key is unknown, so timing does not tell which ids exist.
        expected = found[1] if found else _hash_secret(secrets.token_urlsafe(32))
        if not hmac.compare_digest(expected, _hash_secret(parts[2])) or found is None:
            raise InvalidCredentials("the API key is not valid")
        key = found[0]
        if not key.active:
            raise InvalidCredentials("the API key has been revoked")
        now = time.monotonic()
        if now - self._last_touch.get(key.id, -TOUCH_INTERVAL_SECONDS) >= TOUCH_INTERVAL_SECONDS:
            self._last_touch[key.id] = now
            self._store.touch_api_key(key.id)
        return key

    async def revoke(self, key_id: str) -> bool:
        self._last_touch.pop(key_id, None)
        return await self._store.revoke_api_key(key_id)
