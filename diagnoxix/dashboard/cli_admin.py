"""`python run.py admin ACTION USERNAME [--db PATH]`: staff accounts for the dashboard.

- `create USERNAME [--password-stdin]`: a new account (admin role);
- `password USERNAME [--password-stdin]`: a new password; every session of the account ends;
- `disable USERNAME`: no more sign-ins, and every session of the account ends at once;
- `enable USERNAME`: sign-ins allowed again (with the password it had).

The password never appears on the command line (where `ps` and shell history would keep it):
it is typed at a hidden prompt, twice, or piped in with `--password-stdin` for scripts. Each change
is audited. The commands work while the server runs: its next request sees the change.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from diagnoxix.config import Settings
from diagnoxix.dashboard.accounts import Passwords, check_new_credentials, create_account
from diagnoxix.store.opening import open_store

_STDIN_HELP = "read the password from the first line of standard input instead of prompting"


def add_admin_parser(commands: Any, db_option: argparse.ArgumentParser) -> None:
    admin = commands.add_parser("admin", help="manage staff accounts for the dashboard")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[db_option], help="create a dashboard account (admin role)")
    create.add_argument("username", help="the name staff sign in with")
    create.add_argument("--password-stdin", action="store_true", help=_STDIN_HELP)
    password = actions.add_parser(
        "password", parents=[db_option], help="set a new password; every session of the account ends"
    )
    password.add_argument("username", help="the account whose password changes")
    password.add_argument("--password-stdin", action="store_true", help=_STDIN_HELP)
    disable = actions.add_parser(
        "disable", parents=[db_option], help="refuse the account's sign-ins and end its sessions at once"
    )
    disable.add_argument("username", help="the account to disable (someone who left, a lost laptop)")
    enable = actions.add_parser(
        "enable", parents=[db_option], help="allow a disabled account to sign in again"
    )
    enable.add_argument("username", help="the account to enable")


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password again: ")
    except EOFError:
        # No terminal and nothing piped in (a script without --password-stdin).
        print("No password given: type it at the prompt, or pipe it with --password-stdin.", file=sys.stderr)
        return None
    if again != first:
        print("The passwords do not match.", file=sys.stderr)
        return None
    return first


async def _create(settings: Settings, username: str, password: str) -> bool:
    async with open_store(settings) as store:
        created = await create_account(store, Passwords(), username, password)
        await store.flush()
        return created


async def _set_password(settings: Settings, username: str, password: str) -> bool:
    async with open_store(settings) as store:
        changed = await store.set_staff_password(username, await Passwords().hash(password))
        if changed:
            store.record_audit("cli", "staff.password", username, {})
        await store.flush()
        return changed


async def _set_disabled(settings: Settings, username: str, disabled: bool) -> bool:
    async with open_store(settings) as store:
        changed = await store.set_staff_disabled(username, disabled)
        if changed:
            store.record_audit("cli", "staff.disable" if disabled else "staff.enable", username, {})
        await store.flush()
        return changed


def _new_password(username: str, from_stdin: bool) -> str | int:
    """The new password, or the exit code: 1 when none was given, 2 when it cannot be used."""
    password = _read_password(from_stdin)
    if password is None:
        return 1
    problem = check_new_credentials(username, password)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    return password


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    username = args.username.strip()
    problem = check_new_credentials(username, "x" * 64)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    action = args.admin_command
    if action in ("disable", "enable"):
        if not asyncio.run(_set_disabled(settings, username, action == "disable")):
            print(f"No staff account is named {username}.", file=sys.stderr)
            return 1
        done = "disabled; its sessions have ended" if action == "disable" else "enabled"
        print(f"Staff account {username} {done}.")
        return 0
    password = _new_password(username, args.password_stdin)
    if isinstance(password, int):
        return password
    if action == "password":
        if not asyncio.run(_set_password(settings, username, password)):
            print(f"No staff account is named {username}.", file=sys.stderr)
            return 1
        print(f"New password set for {username}; its sessions have ended.")
        return 0
    if not asyncio.run(_create(settings, username, password)):
        print(f"A staff account named {username} already exists.", file=sys.stderr)
        return 1
    print(f"Created staff account {username} (admin). Sign in at /dashboard/ on the server.")
    return 0
