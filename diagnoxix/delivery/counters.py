"""What the delivery path counts for `/metrics`: by notification type and priority, and latency.

One object per process, owned by the hub. The store's commit and mark listeners feed `stored`,
`acknowledged` and `read`; the hub's fan-out feeds `sent` and `latency`; the socket handler feeds
`replayed` and `closes`. Counting is a dict increment; labels are bounded (`tally.LabelCounts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from diagnoxix.models import Notification
from diagnoxix.tally import OTHER, Buckets, LabelCounts

# Seconds from a send's commit batch being stamped to its frame being handed to a socket.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[str, str]


class DeliveryCounters:
    __slots__ = ("acknowledged", "closes", "latency", "read", "replayed", "sent", "stored")

    def __init__(self) -> None:
        self.stored = LabelCounts((OTHER, OTHER))
        # Live notification frames handed to sockets (a broadcast counts once per socket).
        self.sent = LabelCounts((OTHER, OTHER))
        self.acknowledged = LabelCounts((OTHER, OTHER))
        self.read = LabelCounts((OTHER, OTHER))
        self.latency = Buckets(LATENCY_BOUNDS)
        # Notifications sent to a (re)connecting client from the store, before it went live.
        self.replayed = 0
        # Closed sockets by close code (the server's, or else the client's; 1006: dropped).
        self.closes: dict[int, int] = {}

    def committed(self, notifications: Sequence[Notification]) -> None:
        """The store's commit listener: what this process stored."""
        stored = self.stored
        for note in notifications:
            stored.add((note.type, note.priority))

    def marked(self, kind: str, counts: Mapping[Labels, int]) -> None:
        """The store's mark listener: acknowledgements and reads that changed something."""
        target = self.acknowledged if kind == "acknowledged" else self.read
        for labels, count in counts.items():
            target.add(labels, count)

    def fanned_out(self, note: Notification, sockets: int, stamped: datetime, now: float) -> None:
        """`note` went to `sockets` sockets; `stamped` is its commit batch's time."""
        self.sent.add((note.type, note.priority), sockets)
        self.latency.observe(max(0.0, now - stamped.timestamp()), sockets)

    def closed(self, code: int | None) -> None:
        key = 1006 if code is None else code
        self.closes[key] = self.closes.get(key, 0) + 1
