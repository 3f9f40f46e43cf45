"""`PgStore`: the core and every query mixin, one class implementing `store.protocols.Store`."""

from __future__ import annotations

from diagnoxix.store.postgres.critical import CriticalQueries
from diagnoxix.store.postgres.messaging import MessagingQueries
from diagnoxix.store.postgres.store import PgCore


class PgStore(CriticalQueries, MessagingQueries, PgCore):
    """`Store` on a PostgreSQL database. Use `open()`/`close()` (the app does it in a cleanup
    context). The mixins come before the core: they implement what `PgAccess` only declares."""
