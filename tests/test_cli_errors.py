"""Ordinary start-up problems end with one line that says what to do, an exit code, no traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from .processes import REPO_ROOT, RUN_PY, Launcher, child_env, free_port, run_cli


def _one_line_no_traceback(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("run.py: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


async def test_a_port_in_use_is_one_clear_line(launcher: Launcher, tmp_path: Path) -> None:
    first = await launcher.start(tmp_path / "a.sqlite3")
    done = await run_cli("--port", str(first.port), "--db", str(tmp_path / "b.sqlite3"))
    line = _one_line_no_traceback(done)
    assert f"cannot listen on 127.0.0.1:{first.port}" in line


async def test_a_second_server_on_the_same_database_is_one_clear_line(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "shared.sqlite3"
    await launcher.start(db)
    done = await run_cli("--port", str(free_port()), "--db", str(db))
    line = _one_line_no_traceback(done)
    assert "another Diagnoxix Notify server is already using" in line


async def test_a_database_where_none_can_be_written_is_one_clear_line(tmp_path: Path) -> None:
    # /proc takes no new files, even from root: as a read-only directory would.
    for args in (("--port", str(free_port())), ("apikey", "list")):
        done = await run_cli(*args, "--db", "/proc/diagnoxix.sqlite3")
        line = _one_line_no_traceback(done)
        assert "cannot open the database /proc/diagnoxix.sqlite3" in line


async def test_admin_create_with_no_terminal_and_no_input_says_how(tmp_path: Path) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RUN_PY), "admin", "create", "alice", "--db", str(tmp_path / "x.sqlite3")],
        cwd=REPO_ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "--password-stdin" in done.stderr


async def test_an_api_key_name_with_a_control_character_is_refused(tmp_path: Path) -> None:
    """A name is a line in a table and a field in the audit log: no line break or other control
    character (NUL, which PostgreSQL cannot store, cannot come through argv at all)."""
    db = str(tmp_path / "keys.sqlite3")
    for name in ("clinic\nforged line", "bell\x07", "x" * 101):
        done = await run_cli("apikey", "create", name, "--db", db)
        assert done.returncode == 2, done.stderr
        assert "NAME must be 1-100 printable characters" in done.stderr
        assert "Traceback" not in done.stderr
    done = await run_cli("apikey", "list", "--db", db)
    assert done.returncode == 0, done.stderr
    assert "forged" not in done.stdout, done.stdout
