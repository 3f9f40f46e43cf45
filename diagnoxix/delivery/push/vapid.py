"""The server's VAPID key pair (RFC 8292): made on first start and kept in the database with the
server secret; its public half is what browsers subscribe with (`GET /v1/push/public-key`)."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

# The `meta` entry that holds the private key (PKCS#8 PEM).
VAPID_META_KEY = "vapid_private_key"
# A signed header is reused for one push service this long (push services accept up to 24 hours).
TOKEN_LIFETIME_SECONDS = 12 * 3600
TOKEN_RENEW_BEFORE_SECONDS = 3600


def generate_vapid_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class VapidSigner:
    """Signs `Authorization: vapid t=…, k=…` for a push service's origin, one token per origin
    reused until it nears its expiry."""

    def __init__(self, private_pem: str, contact: str) -> None:
        self._vapid = Vapid02.from_pem(private_pem.encode("ascii"))
        self._contact = contact
        public = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # What `pushManager.subscribe({applicationServerKey})` takes.
        self.public_key = b64url(public)
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[1] - now > TOKEN_RENEW_BEFORE_SECONDS:
            return cached[0]
        expires = int(now) + TOKEN_LIFETIME_SECONDS
        signed = self._vapid.sign({"aud": audience, "exp": expires, "sub": self._contact})
        header = str(signed["Authorization"])
        if len(self._tokens) > 1000:  # a bounded cache: push services are a handful of origins
            self._tokens.clear()
        self._tokens[audience] = (header, expires)
        return header
