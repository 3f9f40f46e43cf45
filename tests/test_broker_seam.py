"""Everything a user's sockets show goes through the broker, so another process's hub sees it too.

A second process is stood in for by a second subscriber on the app's broker: what reaches it is
what a Redis broker would carry to the hubs of the other processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from diagnoxix.delivery.broker import Broker, Revocation
from diagnoxix.keys import BROKER
from diagnoxix.models import Notification

from .conftest import Service


@dataclass
class OtherProcess:
    """What another process's hub would be handed by the broker."""

    seqs: list[int] = field(default_factory=list)
    controls: list[tuple[str, str]] = field(default_factory=list)
    disconnects: list[tuple[str, int]] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)

    def publish(self, notifications: Sequence[Notification]) -> None:
        self.seqs.extend(n.seq for n in notifications)

    def wants(self, user_id: str) -> bool:
        return True

    def passed(self, seq: int, count: int) -> None:
        raise AssertionError("a subscriber that wants everything is handed everything")

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        self.controls.append((user_id, text))

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        self.disconnects.append((user_id, code))

    def revoke(self, revocation: Revocation) -> None:
        self.revocations.append(revocation)


def _other_process(service: Service) -> OtherProcess:
    other = OtherProcess()
    broker: Broker = service.app[BROKER]
    broker.subscribe(other)
    return other


async def test_committed_notifications_reach_every_process_in_seq_order(service: Service) -> None:
    other = _other_process(service)
    sent = [await service.send(f"p{i % 3}", f"n{i}") for i in range(6)]
    assert other.seqs == [n["seq"] for n in sent]


async def test_an_unread_count_reaches_the_user_in_every_process(service: Service) -> None:
    other = _other_process(service)
    note = await service.send("patient-7")
    ws = await service.connect("patient-7", v1=True)
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=2))["id"] == note["id"]  # the backlog, then the welcome
    assert (await ws.receive_json(timeout=2))["type"] == "welcome"
    resp = await service.client.post(
        "/v1/users/patient-7/notifications/read", json={"ids": [note["id"]]}, headers=service.auth()
    )
    assert resp.status == 200
    # This process's socket got it through the broker, and so did the other process.
    frame = await ws.receive_json(timeout=2)
    assert frame == {"type": "unread", "count": 0}
    assert other.controls == [("patient-7", '{"type":"unread","count":0}')]
    await ws.close()


async def test_a_disconnect_closes_the_users_sockets_in_every_process(service: Service) -> None:
    other = _other_process(service)
    ws = await service.connect("patient-8")
    bystander = await service.connect("patient-9")
    service.app[BROKER].disconnect("patient-8", 1008, "disconnected by clinic staff")
    msg = await ws.receive(timeout=2)
    assert ws.close_code == 1008, msg
    assert other.disconnects == [("patient-8", 1008)]
    assert not bystander.closed
    await bystander.close()


async def test_a_revocation_reaches_every_process(service: Service) -> None:
    other = _other_process(service)
    resp = await service.client.post("/v1/tokens", json={"user_id": "patient-10"}, headers=service.auth())
    token_id = (await resp.json())["token_id"]
    resp = await service.client.delete(f"/v1/users/patient-10/devices/{token_id}", headers=service.auth())
    assert resp.status == 200, await resp.text()
    (revocation,) = other.revocations
    assert revocation.user_id == "patient-10"
    assert [tid for tid, _ in revocation.tokens] == [token_id]
    assert not revocation.all_devices
