"""What every channel beyond the socket asks before anything leaves the server: may this
notification go out on this channel to its user now? (`rules.preferences.allows`, with the user's
stored choices and the clinic's critical categories.)"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from diagnoxix.clock import Clock
from diagnoxix.models import Notification
from diagnoxix.rules.preferences import Preferences, allows
from diagnoxix.store.protocols import PreferenceStore


class ChannelPreferences:
    def __init__(self, store: PreferenceStore, clock: Clock, critical_categories: Collection[str]) -> None:
        self._store = store
        self._clock = clock
        self._critical = frozenset(critical_categories)

    def _critical_one(self, note: Notification) -> bool:
        return note.priority == "critical" or note.type in self._critical

    async def allowed(self, notes: Sequence[Notification], channel: str) -> list[bool]:
        """Per notification, in order: may it go out on `channel` now? Each user's choices are
        read once per call (a point read), and not at all for critical notifications."""
        now = self._clock.now()
        chosen: dict[str, Preferences | None] = {}
        answers: list[bool] = []
        for note in notes:
            if self._critical_one(note):
                answers.append(True)
                continue
            if note.user_id not in chosen:
                chosen[note.user_id] = await self._store.get_preferences(note.user_id)
            answers.append(
                allows(
                    chosen[note.user_id],
                    channel=channel,
                    category=note.type,
                    priority=note.priority,
                    at=now,
                    critical_categories=self._critical,
                )
            )
        return answers
