"""`python run.py admin create`: the operator's way to make a staff account, as a real process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from .dashboard_support import StaffClient, start_server

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 30.0


async def _admin(
    action: str, db: Path, username: str, password_line: str | None = None
) -> subprocess.CompletedProcess[str]:
    stdin = ["--password-stdin"] if password_line is not None else []

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / "run.py"), "admin", action, username, "--db", str(db), *stdin],
            input=password_line or "",
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
            cwd=REPO_ROOT,
        )

    return await asyncio.to_thread(run)


async def _admin_create(db: Path, username: str, password_line: str) -> subprocess.CompletedProcess[str]:
    return await _admin("create", db, username, password_line)


async def test_admin_create_then_sign_in_and_refusals(tmp_path: Path) -> None:
    db = tmp_path / "dashboard.sqlite3"
    created = await _admin_create(db, "carol", "a very long password\n")
    assert created.returncode == 0, created.stderr
    assert "Created staff account carol" in created.stdout
    assert "a very long password" not in created.stdout + created.stderr

    again = await _admin_create(db, "carol", "another long password\n")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    short = await _admin_create(db, "dave", "short\n")
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr
    bad_name = await _admin_create(db, "no spaces please", "a very long password\n")
    assert bad_name.returncode == 2

    server = await start_server(tmp_path, with_admin=False)
    carol, dave = StaffClient(server), StaffClient(server)
    try:
        assert (await carol.login("carol", "another long password")).status == 401
        assert (await carol.login("carol", "a very long password")).status == 303
        assert (await carol.get("/dashboard/keys")).status == 200  # created as admin
        assert (await dave.login("dave", "short")).status == 401  # never created
    finally:
        await carol.close()
        await dave.close()
        await server.close()


async def test_a_password_change_or_a_disable_ends_the_account_s_sessions_at_once(tmp_path: Path) -> None:
    """While the server runs: the operator's command takes effect on the signed-in page's next request."""
    db = tmp_path / "dashboard.sqlite3"
    assert (await _admin_create(db, "erin", "the first long password\n")).returncode == 0
    server = await start_server(tmp_path, with_admin=False)
    erin = StaffClient(server)
    try:
        assert (await erin.login("erin", "the first long password")).status == 303
        assert (await erin.get("/dashboard/keys")).status == 200

        changed = await _admin("password", db, "erin", "the second long password\n")
        assert changed.returncode == 0, changed.stderr
        assert "second long password" not in changed.stdout + changed.stderr
        assert (await erin.get("/dashboard/keys")).status != 200  # signed out: the session ended
        assert (await erin.login("erin", "the first long password")).status == 401
        assert (await erin.login("erin", "the second long password")).status == 303
        assert (await erin.get("/dashboard/keys")).status == 200

        disabled = await _admin("disable", db, "erin")
        assert disabled.returncode == 0, disabled.stderr
        assert (await erin.get("/dashboard/keys")).status != 200
        assert (await erin.login("erin", "the second long password")).status == 401

        assert (await _admin("enable", db, "erin")).returncode == 0
        assert (await erin.login("erin", "the second long password")).status == 303

        nobody = await _admin("disable", db, "frank")
        assert nobody.returncode == 1
        assert "No staff account is named frank" in nobody.stderr
        short = await _admin("password", db, "erin", "short\n")
        assert short.returncode == 2
    finally:
        await erin.close()
        await server.close()
