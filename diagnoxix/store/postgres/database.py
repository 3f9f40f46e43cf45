"""`PgStore`: the core and every query mixin, one class implementing `store.protocols.Store`."""

from __future__ import annotations

from diagnoxix.store.postgres.corrections import PgCorrections
from diagnoxix.store.postgres.critical import CriticalQueries
from diagnoxix.store.postgres.devices import PgDeviceQueries
from diagnoxix.store.postgres.inserts import PgInserts
from diagnoxix.store.postgres.keys import PgKeyQueries
from diagnoxix.store.postgres.marks import PgMarks
from diagnoxix.store.postgres.messaging import MessagingQueries
from diagnoxix.store.postgres.preferences import PgPreferenceQueries
from diagnoxix.store.postgres.push import PgPushQueries
from diagnoxix.store.postgres.staff import PgStaffQueries
from diagnoxix.store.postgres.store import PgCore
from diagnoxix.store.postgres.timers import PgTimerQueries
from diagnoxix.store.postgres.webhooks import PgWebhookQueries


class PgStore(
    PgInserts,
    PgMarks,
    PgCorrections,
    PgKeyQueries,
    PgStaffQueries,
    PgDeviceQueries,
    PgPreferenceQueries,
    PgTimerQueries,
    PgWebhookQueries,
    PgPushQueries,
    CriticalQueries,
    MessagingQueries,
    PgCore,
):
    """`Store` on a PostgreSQL database. Use `open()`/`close()` (the app does it in a cleanup
    context). The mixins come before the core: they implement what `PgAccess` only declares."""
