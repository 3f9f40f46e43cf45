"""`python run.py admin create`: the operator's way to make a staff account, as a real process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from .dashboard_support import StaffClient, start_server

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 30.0


async def _admin_create(db: Path, username: str, password_line: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "run.py"),
                "admin",
                "create",
                username,
                "--db",
                str(db),
                "--password-stdin",
            ],
            input=password_line,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
            cwd=REPO_ROOT,
        )

    return await asyncio.to_thread(run)


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
