"""Python clients: `NotifyClient` for backend services (HTTP API) and `Subscriber` for one user's
live notifications (v1 WebSocket: resume, ack, token refresh, reconnect).

    async with NotifyClient("http://127.0.0.1:7556", api_key) as notify:
        await notify.send_lab_result("user-123", "Complete Blood Count", abnormal=False)  # never values
        await notify.send("user-123", "Prescription Ready", "Pick it up at the front desk.")

    async with Subscriber("http://127.0.0.1:7556", token_provider) as sub:
        async for notification in sub:
            ...  # each notification exactly once, in seq order, acknowledged once handed over
"""

from __future__ import annotations

from diagnoxix_client.items import (
    AppointmentStatus,
    Priority,
    ai_analysis_item,
    appointment_item,
    lab_result_item,
    with_links,
)
from diagnoxix_client.service import NotifyClient, NotifyError
from diagnoxix_client.subscriber import Subscriber

__all__ = [
    "AppointmentStatus",
    "NotifyClient",
    "NotifyError",
    "Priority",
    "Subscriber",
    "ai_analysis_item",
    "appointment_item",
    "lab_result_item",
    "with_links",
]
