"""What the rest of the service may ask of a store about Web Push (`PushStore`), re-exported by
`protocols` with every other concern."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from diagnoxix.store.push_records import NewPushSubscription, PushAttempt, PushSubscription
from diagnoxix.store.timer_records import NewTimer


class PushStore(Protocol):
    """Web Push: users' push subscriptions, and the outbox's jobs (`TimerStore` jobs of the kinds in
    `push_records`) finished with what the push service answered. A job's effect is an outgoing
    HTTP call, so it is claimed (`timer_claim`) in the transaction that records the answer: a job
    whose answer was recorded never runs again (IdempotencyConflict)."""

    async def add_push_subscription(self, new: NewPushSubscription, *, limit: int) -> PushSubscription:
        """Register (or renew: the same endpoint is one subscription, moved to this user if another
        had it); then the user's oldest beyond `limit` are removed, in the same transaction."""

    async def list_push_subscriptions(self, user_id: str) -> list[PushSubscription]:
        """The user's subscriptions, newest first."""

    async def push_subscriptions_of(self, user_ids: Sequence[str]) -> dict[str, list[PushSubscription]]:
        """The subscriptions of these users, by user (a user without any is not a key)."""

    async def get_push_subscription(self, subscription_id: str) -> PushSubscription | None: ...

    async def delete_push_subscription(self, user_id: str, subscription_id: str) -> bool:
        """True when the user had it and it is gone now."""

    async def push_subscribed_users(self) -> list[str]:
        """Every user with at least one subscription (the router keeps them in memory)."""

    def queue_push_jobs(self, jobs: Sequence[NewTimer], on_written: Callable[[int], None]) -> None:
        """Add pending jobs without waiting: committed with the next batch of writes (whose commit
        calls `on_written` with how many were written), in one statement however many."""

    async def route_push(
        self, job_id: str, sends: Sequence[NewTimer], joins: Sequence[NewTimer] = ()
    ) -> None:
        """Finish a routing job, adding its sends, in one transaction (IdempotencyConflict: it was
        finished before, nothing is added). `joins`: digests' jobs, each naming one notification in
        `notification_ids`, that join the pending job of their owner, kind and key (one more id in
        its list) or start it (see `TimerStore` keys), in the same transaction."""

    async def lease_push(self, job_id: str, until: datetime) -> None:
        """A pending job is being run: due again at `until` (if its answer is never recorded)."""

    async def finish_push(
        self, job_id: str, attempt: PushAttempt | None, *, remove_subscription: bool = False
    ) -> None:
        """Finish a send job with the push service's answer (None: nothing was sent), removing the
        subscription when the service says it is gone, in one transaction (IdempotencyConflict:
        finished before)."""

    async def retry_push(self, job_id: str, attempt: PushAttempt, due_at: datetime | None) -> None:
        """Record an answer that asks to try again, and try at `due_at` (None: give up, `failed`)."""

    async def push_attempts(self, notification_ids: Sequence[str]) -> dict[str, list[PushAttempt]]:
        """What the push services answered for these notifications, oldest first."""

    async def purge_push_attempts(self, older_than: timedelta) -> int:
        """Delete one slice of the answers recorded `older_than` ago or earlier; how many."""
