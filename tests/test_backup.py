"""Backups and restores with real processes: `run.py backup` while the server takes a send load,
`run.py restore` into a stopped server's database, and what its clients see afterwards (the raw
protocol, the Python SDK and the browser SDK in Chromium)."""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from diagnoxix.auth import TokenIssuer
from diagnoxix.store.sqlite.migrations import discover
from diagnoxix_client import Subscriber

from .processes import (
    Launcher,
    Server,
    child_env,
    create_api_key,
    free_port,
    run_cli,
)
from .test_browser_sdk import SECRET as PORTAL_SECRET
from .test_browser_sdk import Portal

SECRET = "backup-test-secret-" + "k" * 40
ISSUER = TokenIssuer(SECRET, default_ttl=3600, max_ttl=3600)
# The send load around a backup: senders run this long before it starts and after it ends.
LOAD_MARGIN_SECONDS = 1.0
UNKNOWN_HISTORY_SEQS = 10**12
# db/migrations/0006_restores.sql: the schema version that brought restores.
RESTORES_MIGRATION = 6


def _env(**extra: str) -> dict[str, str]:
    return child_env(DIAGNOXIX_SECRET_KEY=SECRET, **extra)


def _rows(db: Path, *, upto: int | None = None) -> dict[int, tuple[Any, ...]]:
    """Every notification row by seq, read-only (the server may be serving from the file)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT * FROM notifications WHERE seq <= ? ORDER BY seq", (upto if upto is not None else 2**62,)
        ).fetchall()
    finally:
        conn.close()
    return {int(row[0]): tuple(row) for row in rows}


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """A refusal: a non-zero exit, one `run.py: ...` line, no traceback."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("run.py: "), done.stderr
    return lines[0]


def _success(done: subprocess.CompletedProcess[str], starts: str) -> str:
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].startswith(starts), done.stdout
    return lines[0]


async def _send(
    http: aiohttp.ClientSession, server: Server, key: str, user: str, title: str
) -> dict[str, Any]:
    async with http.post(
        f"{server.url}/v1/notifications",
        json={"user_id": user, "title": title, "message": "Please check the portal."},
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict((await resp.json())["notification"])


async def _connect(
    http: aiohttp.ClientSession, server: Server, user: str, query: str = ""
) -> tuple[aiohttp.ClientWebSocketResponse, list[dict[str, Any]], dict[str, Any]]:
    """A v1 client; returns the socket, the notifications replayed before the welcome, the welcome."""
    ws = await http.ws_connect(
        f"{server.ws_url}?token={ISSUER.mint(user).token}{query}", protocols=("diagnoxix.v1",)
    )
    if "since=" not in query:
        await ws.send_json({"type": "hello"})
    replayed: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            frame = await ws.receive_json()
            if frame["type"] == "welcome":
                return ws, replayed, frame
            replayed.append(frame)


async def _ack(ws: aiohttp.ClientWebSocketResponse, ids: list[str]) -> None:
    await ws.send_json({"type": "ack", "ids": ids, "request_id": "ack"})
    async with asyncio.timeout(5):
        while (frame := await ws.receive_json())["type"] != "ack":
            pass
    assert sorted(frame["ids"]) == sorted(ids)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# -- backup under load ---------------------------------------------------------------------


async def test_a_backup_taken_under_send_load_is_a_verified_gap_free_prefix(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "live.sqlite3"
    server = await launcher.start(db)
    _, key = await create_api_key(db)
    backups = tmp_path / "backups"
    backups.mkdir()
    backup = backups / "notify.sqlite3"
    # (sent at, answered at, seqs) of every send the server confirmed with 201.
    confirmed: list[tuple[float, float, list[int]]] = []
    stop = asyncio.Event()

    async def sender(http: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not stop.is_set():
            batch = [
                {"user_id": f"patient-{n}", "title": f"result {i}.{j}", "data": {"i": i}} for j in range(5)
            ]
            began = time.monotonic()
            async with http.post(f"{server.url}/v1/notifications", json={"notifications": batch}) as resp:
                assert resp.status == 201, await resp.text()
                body = await resp.json()
            confirmed.append((began, time.monotonic(), [note["seq"] for note in body["notifications"]]))
            i += 1

    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
        senders = [asyncio.create_task(sender(http, n)) for n in range(4)]
        try:
            await asyncio.sleep(LOAD_MARGIN_SECONDS)
            started = time.monotonic()
            done = await run_cli("backup", str(backup), "--db", str(db))
            ended = time.monotonic()
            await asyncio.sleep(LOAD_MARGIN_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*senders)

    line = _success(done, f"Backed up {db} to {backup}: ")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds patient data
    assert [p.name for p in backups.iterdir()] == ["notify.sqlite3"]  # no temp file left behind
    assert _query(backup, "PRAGMA integrity_check") == [("ok",)]
    assert _query(backup, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file

    copied = _rows(backup)
    top = max(copied)
    assert f"last seq {top}," in line
    assert f"{len(copied):,} notifications" in line
    # Gap-free: every seq up to the backup's newest, each row exactly as the live database has it.
    assert sorted(copied) == list(range(1, top + 1))
    assert _rows(db, upto=top) == copied
    # Consistent with what senders were told: whatever was confirmed before the backup began is
    # in it; and the server kept storing while it ran, and after.
    assert all(seq <= top for _, answered, seqs in confirmed if answered < started for seq in seqs)
    assert any(started < sent and answered < ended for sent, answered, _ in confirmed)
    assert max(_rows(db)) > top


# -- restore ------------------------------------------------------------------------------


@dataclass
class Restored:
    """A server restored from a backup older than what its client had seen."""

    server: Server
    key: str
    backup: Path
    epoch: str
    backup_last_seq: int
    # The highest seq the server had handed out before the restore.
    pre_restore_max: int
    # The restored server's first cursor: one past that, given to nothing.
    first_cursor: int
    # The client's cursor when the server stopped: beyond the backup.
    cursor: int
    # The client's notifications the backup holds, and those of them it had not acknowledged.
    held: list[dict[str, Any]]
    unacknowledged: list[str]


async def _restore_scenario(launcher: Launcher, tmp_path: Path, http: aiohttp.ClientSession) -> Restored:
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db, env=_env())
    _, key = await create_api_key(db)
    held = []
    for i in range(10):
        held.append(await _send(http, server, key, "pat", f"before the backup {i}"))
        await _send(http, server, key, "sam", f"for sam {i}")
    ws, replayed, welcome = await _connect(http, server, "pat", "&since=0")
    assert [n["id"] for n in replayed] == [n["id"] for n in held]
    await _ack(ws, [n["id"] for n in held[:4]])

    backup = tmp_path / "notify-backup.sqlite3"
    _success(await run_cli("backup", str(backup), "--db", str(db)), "Backed up")
    backup_last_seq = max(_rows(backup))
    assert backup_last_seq == held[-1]["seq"] + 1  # sam's last one

    # After the backup: the client gets and acknowledges more; the backup will not hold them.
    later = [await _send(http, server, key, "pat", f"after the backup {i}") for i in range(5)]
    async with asyncio.timeout(5):
        live = [await ws.receive_json() for _ in later]
    assert [n["id"] for n in live] == [n["id"] for n in later]
    await _ack(ws, [n["id"] for n in later])
    await _send(http, server, key, "sam", "after the backup, for sam")
    await ws.close()
    assert await server.terminate() == 0
    pre_restore_max = max(_rows(db))

    line = _success(await run_cli("restore", str(backup), "--db", str(db)), f"Restored {db} from {backup}")
    assert f"new seqs start after {pre_restore_max + 1}" in line
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("notify.sqlite3.before-restore-")]
    assert f"kept as {db}.before-restore-" in line
    aside = next(p for p in kept if p.name.endswith("Z"))
    assert max(_rows(aside)) == pre_restore_max  # the replaced database, whole, kept aside
    assert stat.S_IMODE(db.stat().st_mode) == 0o600

    server = await launcher.start(db, env=_env(), port=server.port)
    return Restored(
        server=server,
        key=key,
        backup=backup,
        epoch=welcome["epoch"],
        backup_last_seq=backup_last_seq,
        pre_restore_max=pre_restore_max,
        first_cursor=pre_restore_max + 1,
        cursor=later[-1]["seq"],
        held=held,
        unacknowledged=[n["id"] for n in held[4:]],
    )


async def test_after_a_restore_a_cursor_beyond_the_backup_is_not_recovered_and_nothing_held_is_lost(
    launcher: Launcher, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        r = await _restore_scenario(launcher, tmp_path, http)

        # A cursor the backup covers is honoured exactly: its seqs mean what they meant.
        ws, replayed, welcome = await _connect(
            http, r.server, "pat", f"&since={r.held[5]['seq']}&epoch={r.epoch}"
        )
        assert welcome["recovered"] is True
        assert "reason" not in welcome
        assert [n["id"] for n in replayed] == [n["id"] for n in r.held[6:]]
        await ws.close()

        # The client's cursor is beyond the backup: not recovered, and why; then everything the
        # backup holds for it that it had not acknowledged, in seq order.
        ws, replayed, welcome = await _connect(http, r.server, "pat", f"&since={r.cursor}&epoch={r.epoch}")
        assert (welcome["recovered"], welcome["reason"]) == (False, "store_restored")
        assert welcome["epoch"] == r.epoch
        assert welcome["last_seq"] == r.first_cursor
        assert [n["id"] for n in replayed] == r.unacknowledged
        assert welcome["replayed"] == len(r.unacknowledged)

        # New notifications get seqs beyond any the old server handed out, and arrive live.
        new = await _send(http, r.server, r.key, "pat", "after the restore")
        assert new["seq"] == r.first_cursor + 1
        async with asyncio.timeout(5):
            frame = await ws.receive_json()
        assert (frame["id"], frame["seq"]) == (new["id"], new["seq"])
        await ws.close()

        # The old server's newest seq is one of those undone too; the cursor the welcome gave is
        # not: a client that adopted it resumes as usual, without a second `store_restored`.
        ws, replayed, welcome = await _connect(
            http, r.server, "pat", f"&since={r.pre_restore_max}&epoch={r.epoch}"
        )
        assert (welcome["recovered"], welcome["reason"]) == (False, "store_restored")
        await ws.close()
        ws, replayed, welcome = await _connect(
            http, r.server, "pat", f"&since={r.first_cursor}&epoch={r.epoch}"
        )
        assert welcome["recovered"] is True
        assert [n["id"] for n in replayed] == [new["id"]]
        await ws.close()

    # Nothing the backup holds is lost: every row is in the restored database as it was.
    db = r.server.db
    assert _rows(db, upto=r.backup_last_seq) == _rows(r.backup)
    audit = _query(db, "SELECT actor, action, target, details FROM audit_log WHERE action = 'store.restore'")
    assert [(a[0], a[1], a[2]) for a in audit] == [("cli", "store.restore", r.backup.name)]
    details = json.loads(audit[0][3])
    assert (details["backup_last_seq"], details["first_cursor"]) == (r.backup_last_seq, r.first_cursor)


async def test_the_python_sdk_adopts_the_restored_servers_cursor_and_gets_what_it_is_owed(
    launcher: Launcher, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        r = await _restore_scenario(launcher, tmp_path, http)

        async def token() -> str:
            return ISSUER.mint("pat").token

        sub = Subscriber(r.server.url, token, since=r.cursor, epoch=r.epoch, max_backoff=0.2)
        sub.start()
        try:
            owed = [await sub.next(wait_seconds=5) for _ in r.unacknowledged]
            assert [n["id"] for n in owed] == r.unacknowledged
            await _until(lambda: bool(sub.welcomes))
            assert (sub.welcomes[0]["recovered"], sub.welcomes[0]["reason"]) == (False, "store_restored")
            assert sub.last_seq == r.first_cursor
            # Dropped and back: it resumes from the adopted cursor, exactly, and misses nothing new.
            ws = sub._ws
            assert ws is not None
            await ws.close()
            sent = [await _send(http, r.server, r.key, "pat", f"after the restore {i}") for i in range(3)]
            got = [await sub.next(wait_seconds=5) for _ in sent]
            assert [n["id"] for n in got] == [n["id"] for n in sent]
            assert all(n["seq"] > r.first_cursor for n in got)
            await _until(lambda: len(sub.welcomes) == 2)
            assert [w["recovered"] for w in sub.welcomes] == [False, True]
            assert sub.last_seq == sent[-1]["seq"]
            # The SDK acknowledges what it handed over: none of it is owed again.
            unacked = "SELECT count(*) FROM notifications WHERE user_id = 'pat' AND delivered_at IS NULL"
            await _until(lambda: _query(r.server.db, unacked) == [(0,)])
        finally:
            await sub.close()


async def test_a_restore_without_the_replaced_database_starts_seqs_a_safe_distance_on(
    launcher: Launcher, tmp_path: Path
) -> None:
    # The disk died with the database: restore onto a new machine, with nothing to learn from.
    db = tmp_path / "live.sqlite3"
    server = await launcher.start(db, env=_env())
    _, key = await create_api_key(db)
    backup = tmp_path / "backup.sqlite3"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(3):
            await _send(http, server, key, "pat", f"n{i}")
        _success(await run_cli("backup", str(backup), "--db", str(db)), "Backed up")
        for i in range(3):
            await _send(http, server, key, "pat", f"lost with the disk {i}")
        await server.terminate()

        fresh = tmp_path / "new-machine" / "notify.sqlite3"
        line = _success(await run_cli("restore", str(backup), "--db", str(fresh)), "Restored")
        floor = 3 + UNKNOWN_HISTORY_SEQS + 1
        assert f"new seqs start after {floor} (" in line
        assert "replaced database: none" in line
        restored = await launcher.start(fresh, env=_env())
        epoch = _query(fresh, "SELECT value FROM meta WHERE key = 'epoch'")[0][0]
        ws, replayed, welcome = await _connect(http, restored, "pat", f"&since=6&epoch={epoch}")
        assert (welcome["recovered"], welcome["reason"]) == (False, "store_restored")
        assert [n["title"] for n in replayed] == ["n0", "n1", "n2"]
        await ws.close()
        new = await _send(http, restored, key, "pat", "after the restore")
        assert new["seq"] == floor + 1


async def test_a_backup_from_before_restores_is_migrated_and_restores_add_up(tmp_path: Path) -> None:
    # A backup as the release before db/migrations/0006_restores.sql left its database.
    migrations = discover()
    backup = tmp_path / "old-release.sqlite3"
    old = sqlite3.connect(backup)
    for migration in migrations[: RESTORES_MIGRATION - 1]:
        old.executescript(migration.path.read_text(encoding="utf-8"))
    old.executescript(
        "INSERT INTO meta (key, value) VALUES ('epoch', 'e0123');"
        "INSERT INTO notifications (seq, id, user_id, type, title, message, priority, created_at)"
        " VALUES (7, 'n7', 'pat', 'notification', 'kept', 'm', 'normal', '2026-11-26T10:30:00.000Z');"
        f"PRAGMA user_version = {RESTORES_MIGRATION - 1};"
    )
    old.close()
    fresh = tmp_path / "restored.sqlite3"
    line = _success(await run_cli("restore", str(backup), "--db", str(fresh)), "Restored")
    assert "last seq 7) in" in line
    assert _query(fresh, "PRAGMA user_version") == [(len(migrations),)]
    assert _query(fresh, "SELECT id, title FROM notifications") == [("n7", "kept")]
    first = (7, 7 + UNKNOWN_HISTORY_SEQS + 1)
    assert _query(fresh, "SELECT after_seq, cursor_seq FROM restores") == [first]

    # A backup of the restored database carries that restore's range; restoring it adds its own.
    again = tmp_path / "after-the-restore.sqlite3"
    _success(await run_cli("backup", str(again), "--db", str(fresh)), "Backed up")
    line = _success(await run_cli("restore", str(again), "--db", str(fresh)), "Restored")
    second = (first[1], first[1] + 1)  # the backup's newest is the first cursor; nothing was lost since
    assert f"new seqs start after {second[1]}" in line
    assert _query(fresh, "SELECT after_seq, cursor_seq FROM restores ORDER BY id") == [first, second]


# -- refusals --------------------------------------------------------------------------------


async def test_restore_refuses_while_a_server_runs_on_the_database(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db)
    backup = tmp_path / "backup.sqlite3"
    _success(await run_cli("backup", str(backup), "--db", str(db)), "Backed up")
    line = _one_line(await run_cli("restore", str(backup), "--db", str(db)))
    assert f"a Diagnoxix Notify server is running on {db}: stop it before restoring" in line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("notify.sqlite3.before")) == []
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200


async def test_backup_refuses_to_overwrite_unless_forced(launcher: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "notify.sqlite3"
    await launcher.start(db)
    existing = tmp_path / "yesterday.sqlite3"
    existing.write_bytes(b"yesterday's backup")
    line = _one_line(await run_cli("backup", str(existing), "--db", str(db)))
    assert line == f"run.py: {existing} already exists: pass --force to replace it"
    assert existing.read_bytes() == b"yesterday's backup"
    _success(await run_cli("backup", str(existing), "--db", str(db), "--force"), "Backed up")
    assert _query(existing, "PRAGMA integrity_check") == [("ok",)]
    # Never onto the live database, --force or not.
    line = _one_line(await run_cli("backup", str(db), "--db", str(db), "--force"))
    assert "is the database itself" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["backup", "{tmp}/missing-dir/b.sqlite3", "--db", "{db}"],
            "the directory {tmp}/missing-dir does not exist",
        ),
        (
            ["backup", "{tmp}/b.sqlite3", "--db", "{tmp}/no-such.sqlite3"],
            "there is no database {tmp}/no-such.sqlite3",
        ),
        (["backup", "{tmp}", "--db", "{db}"], "{tmp} is a directory: name the backup file"),
        (
            ["backup", "{tmp}/b.sqlite3", "--db", "{tmp}/not-sqlite"],
            "cannot read the database {tmp}/not-sqlite",
        ),
        (["restore", "{tmp}/no-such-backup", "--db", "{db}"], "there is no backup {tmp}/no-such-backup"),
        (["restore", "{tmp}/not-sqlite", "--db", "{db}"], "cannot read the backup {tmp}/not-sqlite"),
        (["restore", "{tmp}/foreign.sqlite3", "--db", "{db}"], "is not a Diagnoxix Notify database"),
    ],
)
async def test_bad_paths_are_one_line_and_change_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    db = tmp_path / "notify.sqlite3"
    assert (await run_cli("token", "pat", "--db", str(db))).returncode == 0  # creates it
    (tmp_path / "not-sqlite").write_text("not a database\n")
    foreign = sqlite3.connect(tmp_path / "foreign.sqlite3")
    foreign.execute("CREATE TABLE t (x)")
    foreign.commit()
    foreign.close()
    before = _files(tmp_path)
    fill = {"tmp": str(tmp_path), "db": str(db)}
    line = _one_line(await run_cli(*(a.format(**fill) for a in args)))
    assert says.format(**fill) in line
    assert _files(tmp_path) == before


def _files(directory: Path) -> dict[str, bytes]:
    """The files in `directory` and their content; not the lock file a restore (like a server)
    takes beside the database and leaves for the next one."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file() and p.suffix != ".lock"}


async def test_a_disk_that_fills_up_during_the_backup_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "notify.sqlite3"
    assert (await run_cli("token", "pat", "--db", str(db))).returncode == 0  # creates it
    backups = tmp_path / "backups"
    backups.mkdir()
    limit = db.stat().st_size // 4

    def small_disk() -> None:
        # Writes past `limit` bytes fail (EFBIG; Python ignores SIGXFSZ), as on a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # `small_disk` only sets a limit: nothing a forked child could deadlock on.
    done = await run_cli("backup", str(backups / "b.sqlite3"), "--db", str(db), preexec_fn=small_disk)
    line = _one_line(done)
    assert f"run.py: cannot copy the database {db} to {backups}: " in line
    assert list(backups.iterdir()) == []


# -- the browser SDK -------------------------------------------------------------------------


async def test_the_browser_sdk_adopts_the_restored_servers_cursor_without_showing_anything_twice(
    browser: Browser, launcher: Launcher, tmp_path: Path
) -> None:
    port = free_port()
    portal = Portal(port)
    # The portal's pages carry tokens it mints with its own secret.
    env = child_env(DIAGNOXIX_SECRET_KEY=PORTAL_SECRET, DIAGNOXIX_ALLOWED_ORIGINS=portal.origin)
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db, env=env, port=port)
    await portal.start()
    _, key = await create_api_key(db)
    backup = tmp_path / "backup.sqlite3"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            first = [await _send(http, server, key, "patient-7", f"result {i}") for i in range(2)]
            _success(await run_cli("backup", str(backup), "--db", str(db)), "Backed up")
            page = await browser.new_page()
            await page.goto(portal.url_for("patient-7"))
            later = await _send(http, server, key, "patient-7", "result 2")
            await page.wait_for_function("window.received.length === 3", timeout=5000)
            assert await page.evaluate("window.notify.lastSeq") == later["seq"]

            await server.terminate()
            _success(await run_cli("restore", str(backup), "--db", str(db)), "Restored")
            server = await launcher.start(db, env=env, port=port)
            # The page reconnects by itself with its cursor, beyond the backup. While the server was
            # down it may have fallen back to SSE; then a WebSocket takes over at once, with the
            # adopted cursor, and its own welcome follows this one.
            restored = "window.welcomes.find((w) => w.reason === 'store_restored')"
            await page.wait_for_function(f"{restored} !== undefined", timeout=10_000)
            welcome = await page.evaluate(restored)
            assert welcome["recovered"] is False
            assert welcome["replayed"] == 2
            # It adopts the restored server's first cursor, one past the old server's newest seq.
            assert await page.evaluate("window.notify.lastSeq") == welcome["last_seq"] == later["seq"] + 1
            new = await _send(http, server, key, "patient-7", "after the restore")
            await page.wait_for_function("window.received.length === 4", timeout=5000)
            await asyncio.sleep(0.3)  # a duplicate would arrive now
            received = await page.evaluate("window.received")
            # The two the backup still owed were shown once already: not again. The new one has a
            # seq beyond the old cursor, so the page takes it and moves its cursor on.
            assert [n["id"] for n in received] == [n["id"] for n in [*first, later, new]]
            assert await page.evaluate("window.notify.lastSeq") == new["seq"] == later["seq"] + 2
            cursor = json.loads(await page.evaluate("localStorage.getItem('diagnoxix-notify:patient-7')"))
            assert cursor == {"seq": new["seq"], "epoch": welcome["epoch"]}
            # A WebSocket taking over from SSE resumed from the adopted cursor: nothing to replay.
            after = await page.evaluate(
                "window.welcomes.slice(window.welcomes.findIndex((w) => w.reason === 'store_restored') + 1)"
            )
            assert all(w["recovered"] is True and w["replayed"] == 0 for w in after)
    finally:
        await portal.stop()
