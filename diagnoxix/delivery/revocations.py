"""Revoked connection tokens: the per-process list every token check reads, and revoking.

Checking a token happens on every connect and every HTTP call with a user's token, so it must not
wait for the database. Each process keeps the ids of revoked tokens that are still alive in
memory: loaded from the store at start (`RevokedTokens.load`), then kept current by the broker's
revocation events, which reach every process's hub (`Hub.revoke`) and close the sockets of the
revoked devices there. A check is a dict lookup; the cost is memory: one entry (~150 bytes) per
revoked token until it expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from diagnoxix.delivery.broker import Broker, Revocation
from diagnoxix.store.protocols import RevokedToken, Store


class RevokedTokens:
    """Token id -> expiry, for revoked tokens not yet expired (`auth.RevocationList`)."""

    def __init__(self) -> None:
        self._expiries: dict[str, float] = {}
        # Expired entries are swept when the list has doubled since the last sweep: revoking
        # stays O(1) on average, and an expired token is refused by its signature anyway.
        self._sweep_at = 64

    def __len__(self) -> int:
        return len(self._expiries)

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._expiries

    def load(self, revoked: Iterable[RevokedToken]) -> None:
        self.add((token_id, expires.timestamp()) for token_id, expires in revoked)

    def add(self, tokens: Iterable[tuple[str, float]]) -> None:
        self._expiries.update(tokens)
        if len(self._expiries) >= self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        # Kept a minute past expiry: longer than the leeway tokens are checked with.
        horizon = time.time() - 60
        self._expiries = {tid: at for tid, at in self._expiries.items() if at > horizon}
        self._sweep_at = max(64, 2 * len(self._expiries))


async def revoke_devices(
    store: Store, broker: Broker, user_id: str, token_id: str | None, *, actor: str
) -> int:
    """Revoke one device of the user (or all, with None): durably first, then through the broker
    to every process (their lists, their sockets), then the audit log. Returns how many were
    revoked by this call."""
    revoked = await store.revoke_devices(user_id, token_id)
    tokens = tuple((tid, expires.timestamp()) for tid, expires in revoked)
    # Even when nothing was live to revoke: an "all" still closes whatever sockets are open.
    if tokens or token_id is None:
        broker.revoke(Revocation(user_id, tokens, all_devices=token_id is None))
    action = "device.revoke" if token_id is not None else "device.revoke_all"
    details = {"token_ids": [tid for tid, _ in tokens], "count": len(tokens)}
    store.record_audit(actor, action, user_id, details)
    return len(tokens)
