"""`PgStore`: the core and every query mixin, one class implementing `store.protocols.Store`."""

from __future__ import annotations

from diagnoxix.store.postgres.push import PgPushQueries
from diagnoxix.store.postgres.store import PgCore
from diagnoxix.store.postgres.timers import PgTimerQueries
from diagnoxix.store.postgres.webhooks import PgWebhookQueries


class PgStore(PgTimerQueries, PgWebhookQueries, PgPushQueries, PgCore):
    """`Store` on a PostgreSQL database. Use `open()`/`close()` (the app does it in a cleanup
    context). The mixins come before the core: they implement what `PgAccess` only declares."""
