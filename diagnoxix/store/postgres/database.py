"""`PgStore`: the core and every query mixin, one class implementing `store.protocols.Store`."""

from __future__ import annotations

from diagnoxix.store.postgres.corrections import PgCorrections
from diagnoxix.store.postgres.devices import PgDeviceQueries
from diagnoxix.store.postgres.keys import PgKeyQueries
from diagnoxix.store.postgres.marks import PgMarks
from diagnoxix.store.postgres.preferences import PgPreferenceQueries
from diagnoxix.store.postgres.staff import PgStaffQueries
from diagnoxix.store.postgres.store import PgCore


class PgStore(
    PgMarks,
    PgCorrections,
    PgKeyQueries,
    PgStaffQueries,
    PgDeviceQueries,
    PgPreferenceQueries,
    PgCore,
):
    """`Store` on a PostgreSQL database. Use `open()`/`close()` (the app does it in a cleanup
    context). The mixins come before the core: they implement what `PgAccess` only declares."""
