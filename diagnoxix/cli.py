"""Command line: serve (the default), manage API keys, print connection tokens.

python run.py [--host H] [--port P] [--db PATH] [--dev] [--broker URL]
python run.py apikey create NAME [--db PATH]     # the key alone on the last line
python run.py apikey list [--db PATH]
python run.py apikey revoke KEY_ID [--db PATH]
python run.py token USER_ID [--ttl SECONDS] [--db PATH]   # the token alone on the last line
python run.py admin create USERNAME [--db PATH] [--password-stdin]   # a dashboard account
python run.py admin password USERNAME [--db PATH] [--password-stdin] # a new password; its sessions end
python run.py admin disable|enable USERNAME [--db PATH]   # someone left: refused, sessions end
python run.py backup PATH [--db PATH] [--force]   # a verified copy, taken while serving
python run.py restore BACKUP [--db PATH]          # the server stopped; the old database kept aside
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from diagnoxix.app import create_app, runner_options
from diagnoxix.auth import ApiKeys, TokenIssuer, generate_secret, mint_device_token
from diagnoxix.config import (
    ConfigError,
    Settings,
    env_setting,
    flag_help,
    run_command,
    settings_from_env,
    store_label,
)
from diagnoxix.config_broker import broker_target, check_broker_url
from diagnoxix.dashboard.cli_admin import add_admin_parser, run_admin
from diagnoxix.edge.server import serve
from diagnoxix.edge.workers import Supervisor, is_worker
from diagnoxix.logs import configure_logging
from diagnoxix.models import format_timestamp
from diagnoxix.rules import (
    MAX_API_KEY_NAME_CHARS,
    USER_ID_SHAPE,
    is_valid_api_key_name,
    is_valid_user_id,
    token_ttl_seconds,
)
from diagnoxix.serving_tuning import tune_for_serving
from diagnoxix.store.opening import backup_store, open_store, restore_store
from diagnoxix.store.protocols import BackupReport, RestoreReport, Store, StoreError

log = logging.getLogger("diagnoxix")
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """Every command and flag; docs/configuration.md is generated from it (`diagnoxix.reference`)."""
    parser = argparse.ArgumentParser(
        prog="run.py", description="Diagnoxix Notify: real-time notifications for clinics."
    )
    parser.add_argument("--host", help=flag_help("address to listen on", "DIAGNOXIX_HOST"))
    parser.add_argument("--port", type=int, help=flag_help("port to listen on", "DIAGNOXIX_PORT"))
    parser.add_argument(
        "--workers", type=int, help=flag_help("server processes sharing the port", "DIAGNOXIX_WORKERS")
    )
    parser.add_argument("--db", type=Path, help=flag_help("SQLite file", "DIAGNOXIX_DB"))
    parser.add_argument(
        "--store",
        metavar="URL",
        help=flag_help("a postgresql:// URL instead of the SQLite file", "DIAGNOXIX_STORE"),
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help=flag_help("development mode: ?user_id= connections, open test endpoint", "DIAGNOXIX_DEV"),
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help=flag_help(
            "Redis for several processes (redis://, rediss:// or unix://; a password here shows in ps:"
            " prefer the variable)",
            "DIAGNOXIX_BROKER",
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    db_option = argparse.ArgumentParser(add_help=False)
    db_option.add_argument(
        "--db", type=Path, default=argparse.SUPPRESS, help=flag_help("SQLite file", "DIAGNOXIX_DB")
    )
    db_option.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=flag_help("a postgresql:// URL instead of the SQLite file", "DIAGNOXIX_STORE"),
    )

    apikey = commands.add_parser("apikey", help="manage API keys for backend services")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)
    create = apikey_commands.add_parser("create", parents=[db_option], help="create a key, print it once")
    create.add_argument("name", help="who uses the key, e.g. appointments-service")
    apikey_commands.add_parser("list", parents=[db_option], help="list keys (never the secrets)")
    revoke = apikey_commands.add_parser("revoke", parents=[db_option], help="revoke a key by id")
    revoke.add_argument("key_id", help="the key's id, as `apikey list` shows it")

    token = commands.add_parser("token", parents=[db_option], help="print a connection token")
    token.add_argument("user_id", help=f"the user the token is for: {USER_ID_SHAPE}")
    token.add_argument("--ttl", type=int, help=flag_help("lifetime in seconds", "DIAGNOXIX_TOKEN_TTL"))
    add_admin_parser(commands, db_option)

    backup = commands.add_parser(
        "backup", parents=[db_option], help="a verified copy of the database, taken while serving"
    )
    backup.add_argument("path", type=Path, metavar="PATH", help="the backup file to write (owner-only)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    restore = commands.add_parser(
        "restore", parents=[db_option], help="replace the database by a backup (stop the server first)"
    )
    restore.add_argument("backup", type=Path, metavar="BACKUP", help="a file written by run.py backup")
    return parser


def build_settings(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    settings = settings_from_env(env)
    changes: dict[str, object] = {}
    if getattr(args, "host", None) is not None:
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError("--port must be between 0 and 65535")
        changes["port"] = args.port
    if getattr(args, "workers", None) is not None:
        changes["workers"] = env_setting("DIAGNOXIX_WORKERS").parse("--workers", str(args.workers), settings)
    if getattr(args, "db", None) is not None:
        changes["db_path"] = args.db
    if getattr(args, "store", None) is not None:
        changes["store_url"] = env_setting("DIAGNOXIX_STORE").parse("--store", args.store, settings)
    if getattr(args, "dev", None):
        changes["dev"] = True
    if getattr(args, "broker", None) is not None:
        changes["broker_url"] = check_broker_url("--broker", args.broker)
    return settings.with_overrides(**changes)


async def _with_store(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    async with open_store(settings) as store:
        return await action(store)


async def _apikey_create(store: Store, name: str) -> str:
    key, secret = await ApiKeys(store).create(name)
    store.record_audit("cli", "apikey.create", key.id, {"name": name})
    print(f"Created API key {key.id} ({name}). It is shown once; store it as a secret:")
    return secret


async def _apikey_list(store: Store) -> None:
    keys = await store.list_api_keys()
    if not keys:
        print(f"No API keys. Create one with: {run_command()} apikey create NAME")
    for key in keys:
        state = f"revoked {format_timestamp(key.revoked_at)}" if key.revoked_at else "active"
        used = format_timestamp(key.last_used_at) if key.last_used_at else "never"
        print(f"{key.id}\t{key.name}\tcreated {format_timestamp(key.created_at)}\tlast used {used}\t{state}")


async def _apikey_revoke(store: Store, key_id: str) -> bool:
    revoked = await ApiKeys(store).revoke(key_id)
    if revoked:
        store.record_audit("cli", "apikey.revoke", key_id)
    return revoked


async def _token(store: Store, settings: Settings, user_id: str, ttl: int | None) -> str:
    secret = settings.secret_key or await store.get_or_create_meta("secret_key", generate_secret)
    issuer = TokenIssuer(
        secret, default_ttl=settings.token_ttl_seconds, max_ttl=settings.token_max_ttl_seconds
    )
    minted = await mint_device_token(issuer, store, user_id, ttl)
    store.record_audit("cli", "token.mint", user_id, {"ttl": ttl, "token_id": minted.token_id})
    print(f"Connection token for {user_id}, expires {format_timestamp(minted.expires_at)}:")
    return minted.token


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _backed_up(db: Path, report: BackupReport) -> str:
    return (
        f"Backed up {db} to {report.path}: {_megabytes(report.size_bytes)}, {report.notifications:,}"
        f" notifications, last seq {report.last_seq}, schema {report.schema_version}, integrity"
        f" checked, in {report.seconds:.1f} s"
    )


def _restored(report: RestoreReport) -> str:
    backup = report.backup
    kept = f"kept as {report.kept_aside}" if report.kept_aside else "none"
    unknown = "" if report.history_known else " (the replaced database could not tell which seqs clients saw)"
    return (
        f"Restored {report.db_path} from {backup.path} ({_megabytes(backup.size_bytes)},"
        f" {backup.notifications:,} notifications, last seq {backup.last_seq}) in {backup.seconds:.1f} s;"
        f" replaced database: {kept}; new seqs start after {report.first_cursor}{unknown}"
    )


def _fail(message: str) -> int:
    """An ordinary start-up problem: one line an operator can act on, no traceback."""
    print(f"run.py: {message}", file=sys.stderr)
    return 1


def _serve(settings: Settings) -> int:
    configure_logging(settings.log_level, as_json=settings.log_json)
    if settings.dev:
        log.warning("server.dev_mode", extra={"note": "user_id connections and open test endpoint"})
    app = create_app(settings)
    tune_for_serving(app)
    log.info(
        "server.start",
        extra={
            "host": settings.host,
            "port": settings.port,
            "db": store_label(settings),
            # Where Redis is, never its password.
            "broker": broker_target(settings.broker_url),
        },
    )
    try:
        serve(
            app,
            host=settings.host,
            port=settings.port,
            on_ready=lambda: print(
                f"Diagnoxix Notify on http://{settings.host}:{settings.port}"
                f"{' (dev mode)' if settings.dev else ''}; Ctrl+C to stop",
                flush=True,
            ),
            reuse_port=is_worker(),
            **runner_options(settings),
        )
    except StoreError as exc:
        return _fail(str(exc))
    except OSError as exc:
        # Binding the port: in use, or a privileged port without the right to it.
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    return 0


def workers_problem(settings: Settings) -> str | None:
    """Why these settings cannot run several workers (None: they can)."""
    if not settings.store_url:
        return "--workers above 1 needs a shared store: DIAGNOXIX_STORE (--store) postgresql://..."
    if not settings.broker_url:
        return "--workers above 1 needs the Redis broker: DIAGNOXIX_BROKER (--broker) redis://..."
    if settings.port == 0:
        return "--workers above 1 needs a fixed --port for the workers to share"
    return None


def main(argv: Sequence[str]) -> int:
    try:
        return _main(argv)
    except StoreError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = build_settings(args, dict(os.environ))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command is None:
        if settings.workers > 1 and not is_worker():
            problem = workers_problem(settings)
            if problem:
                parser.error(problem)
            configure_logging(settings.log_level, as_json=settings.log_json)
            return Supervisor(settings.workers, [sys.argv[0], *argv]).run()
        return _serve(settings)
    if args.command == "admin":
        return run_admin(args, settings)
    if args.command == "backup":
        print(_backed_up(settings.db_path, backup_store(settings, args.path, force=args.force)))
        return 0
    if args.command == "restore":
        print(_restored(restore_store(settings, args.backup)))
        return 0
    if args.command == "token":
        if not is_valid_user_id(args.user_id):
            parser.error(f"USER_ID must be {USER_ID_SHAPE}")
        lifetime = token_ttl_seconds(settings.token_max_ttl_seconds)
        if args.ttl is not None and not lifetime.admits(args.ttl):
            parser.error(f"--ttl must be {lifetime.text} seconds")
        token = asyncio.run(_with_store(settings, lambda s: _token(s, settings, args.user_id, args.ttl)))
        print(token)
        return 0
    if args.apikey_command == "create":
        name = args.name.strip()
        if not is_valid_api_key_name(name):
            parser.error(f"NAME must be 1-{MAX_API_KEY_NAME_CHARS} printable characters")
        secret = asyncio.run(_with_store(settings, lambda s: _apikey_create(s, name)))
        print(secret)
        return 0
    if args.apikey_command == "list":
        asyncio.run(_with_store(settings, _apikey_list))
        return 0
    revoked = asyncio.run(_with_store(settings, lambda s: _apikey_revoke(s, args.key_id)))
    if not revoked:
        print(f"No active API key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"Revoked API key {args.key_id}")
    return 0
