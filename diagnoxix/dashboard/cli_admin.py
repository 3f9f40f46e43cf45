"""`python run.py admin create USERNAME [--db PATH] [--password-stdin]`: a staff account.

The password never appears on the command line (where `ps` and shell history would keep it):
it is typed at a hidden prompt, twice, or piped in with `--password-stdin` for scripts.
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


def add_admin_parser(commands: Any, db_option: argparse.ArgumentParser) -> None:
    admin = commands.add_parser("admin", help="manage staff accounts for the dashboard")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[db_option], help="create a dashboard account (admin role)")
    create.add_argument("username", help="the name staff sign in with")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )


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


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    username = args.username.strip()
    problem = check_new_credentials(username, "x" * 64)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    problem = check_new_credentials(username, password)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if not asyncio.run(_create(settings, username, password)):
        print(f"A staff account named {username} already exists.", file=sys.stderr)
        return 1
    print(f"Created staff account {username} (admin). Sign in at /dashboard/ on the server.")
    return 0
