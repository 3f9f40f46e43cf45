"""docs/configuration.md is what the code generates: every command, flag and variable, with the
defaults the code has, so the reference cannot drift from the settings or the command line."""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from diagnoxix.cli import build_parser, build_settings
from diagnoxix.config import ENV_SETTINGS, Settings, flag_help, settings_from_env
from diagnoxix.reference import REFERENCE_PATH, REGENERATE, commands, render, variable_of

ROOT = Path(__file__).resolve().parent.parent

# A value each variable a flag names accepts, as typed after the flag (a flag without a value is
# given its variable's "on").
SAMPLES = {
    "DIAGNOXIX_HOST": "10.1.2.3",
    "DIAGNOXIX_PORT": "8123",
    "DIAGNOXIX_DB": "/srv/clinic/notify.sqlite3",
    "DIAGNOXIX_WORKERS": "3",
    "DIAGNOXIX_STORE": "postgresql://notify@db.clinic.internal:5432/notify",
    "DIAGNOXIX_TOKEN_TTL": "600",
    "DIAGNOXIX_BROKER": "redis://:secret@redis.internal:6379/0",
}
# Flags whose default is a setting but which change only the one command's action, not the setting.
PER_COMMAND = {("token", "ttl")}


def test_the_reference_is_what_the_code_generates() -> None:
    written = REFERENCE_PATH.read_text(encoding="utf-8")
    generated = render()
    if written != generated:
        diff = "".join(
            difflib.unified_diff(
                written.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "docs/configuration.md",
                "generated",
                n=1,
            )
        )
        pytest.fail(f"docs/configuration.md is stale: run `{REGENERATE}` and commit it.\n{diff}")


def test_the_module_prints_the_reference() -> None:
    """What `make docs` writes (`--write`) is what the module prints, run as the Makefile runs it."""
    printed = subprocess.run(
        [sys.executable, "-m", "diagnoxix.reference"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert printed == render()
    assert "| `DIAGNOXIX_PORT` | `port` | `7556` | a whole number from 0 to 65535 |" in printed


def test_every_command_flag_and_variable_is_in_it() -> None:
    text = render()
    found = commands()
    assert {" ".join(c.words) for c in found} >= {"", "apikey", "apikey create", "token", "admin create"}
    for command in found:
        if command.arguments:
            assert f"### `{command.name}`" in text
        for action in command.arguments:
            assert action.help, f"`{command.name}` {action.dest}: give it a help string"
            assert (action.option_strings[0] if action.option_strings else action.dest) in text
    for setting in ENV_SETTINGS:
        assert f"| `{setting.variable}` | `{setting.field}` |" in text


def test_a_new_subcommand_appears_by_itself() -> None:
    """Another command added to the parser (as `backup` and `restore` were) needs nothing here."""
    parser = build_parser()
    (choices,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export = choices.add_parser("export", help="copy the database while serving")
    export.add_argument("target", help="where the copy goes")
    export.add_argument("--db", type=Path, help=flag_help("SQLite file", "DIAGNOXIX_DB"))
    export.add_argument("--verify", action="store_true", help="read the copy back")

    text = render(parser)

    assert "### `run.py export`\n\nCopy the database while serving.\n" in text
    assert "run.py export [--db DB] [--verify] target\n" in text
    assert "| `target` | where the copy goes | required |  |" in text
    assert "| `--db DB` | SQLite file | `db/diagnoxix.sqlite3` | `DIAGNOXIX_DB` |" in text
    assert "| `--verify` | read the copy back | `off` |  |" in text
    assert text.count("### `") == render().count("### `") + 1


def test_every_help_text_formats() -> None:
    """argparse formats help with %: a stray one would break `--help` of that command."""
    for command in commands():
        assert command.parser.format_help()


def test_a_flag_that_names_a_variable_sets_what_the_variable_sets() -> None:
    """The reference shows a flag's default as its variable's: true only if both set one field."""
    checked = 0
    for command in commands():
        for action in command.arguments:
            setting = variable_of(action)
            if setting is None or (" ".join(command.words), action.dest) in PER_COMMAND:
                continue
            positionals = [
                "x" if a.dest != "user_id" else "u1" for a in command.arguments if not a.option_strings
            ]
            flag = action.option_strings[-1]
            if action.nargs == 0:
                argv, raw = [flag], "1"
            else:
                raw = SAMPLES[setting.variable]
                argv = [flag, raw]
            args = build_parser().parse_args([*command.words, *argv, *positionals])
            from_flag = build_settings(args, {})
            from_variable = settings_from_env({setting.variable: raw})
            assert from_flag == from_variable != Settings(), f"{command.name} {flag}"
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("variable", sorted(SAMPLES))
def test_each_sample_is_a_value_its_variable_accepts(variable: str) -> None:
    assert settings_from_env({variable: SAMPLES[variable]}) != Settings()
