"""docs/configuration.md, generated from the code so it cannot drift: every command and flag of
`run.py` (found by walking its argparse parser, so a new subcommand appears by itself) and every
environment variable (`config.ENV_SETTINGS`), each with its default as `Settings` has it.

    python -m diagnoxix.reference            # print the markdown
    python -m diagnoxix.reference --write    # rewrite docs/configuration.md (what `make docs` runs)

tests/test_reference.py fails when the file differs from what this prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from diagnoxix.cli import build_parser
from diagnoxix.config import ENV_SETTINGS, REPO_ROOT, EnvSetting, flag_help_suffix, shown

REFERENCE_PATH = REPO_ROOT / "docs" / "configuration.md"
REGENERATE = "make docs"

_INTRO = """\
# Configuration reference

<!-- Generated from diagnoxix/config.py and diagnoxix/cli.py by `make docs`
     (python -m diagnoxix.reference --write): edit those, not this file. -->

Every setting has a default. An environment variable changes it, and a command-line flag, where
there is one, wins over the variable. The server reads the variables when it starts; the
commands below read them too (`DIAGNOXIX_DB` names the database they work on). A value a
variable does not accept stops `run.py` with a message naming the variable and what it takes.

## Command line

`run.py` serves, or runs one of the commands below and exits. Run it with the virtualenv's
interpreter (`.venv/bin/python run.py`); `--help` after any command prints its part of this page.
"""


@dataclass(frozen=True, slots=True)
class Command:
    """One parser of the command line: `run.py` itself, or a subcommand such as `apikey create`."""

    words: tuple[str, ...]
    help: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(("run.py", *self.words))

    @property
    def arguments(self) -> list[argparse.Action]:
        """Its own arguments, positionals first (as `--help` lists them): not `--help`, not the
        choice of a subcommand."""
        own = [
            action
            for action in self.parser._actions
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        ]
        return sorted(own, key=lambda action: bool(action.option_strings))

    @property
    def subcommands(self) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
        for action in self.parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None


def commands(parser: argparse.ArgumentParser | None = None) -> list[Command]:
    """`run.py` and every subcommand under it, depth first, in the order the parser lists them."""
    return list(_walk(Command((), "", parser or build_parser())))


def _walk(command: Command) -> Iterator[Command]:
    yield command
    choices = command.subcommands
    if choices is None:
        return
    helps = {action.dest: action.help or "" for action in choices._choices_actions}
    for word, parser in choices.choices.items():
        yield from _walk(Command((*command.words, word), helps.get(word, ""), parser))


def variable_of(action: argparse.Action) -> EnvSetting | None:
    """The environment variable a flag's help names as its default (`config.flag_help`)."""
    for setting in ENV_SETTINGS:
        if (action.help or "").endswith(flag_help_suffix(setting.variable)):
            return setting
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _value(value: object) -> str:
    text = shown(value)
    return text if text == "none" else f"`{text}`"


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _spelled(action: argparse.Action) -> str:
    """How the argument is written: `--ttl TTL`, `--dev`, `user_id`."""
    if not action.option_strings:
        return str(action.metavar or action.dest)
    flags = ", ".join(action.option_strings)
    return f"{flags} {action.metavar or action.dest.upper()}" if _takes_value(action) else flags


def _usage(command: Command) -> str:
    """Like argparse's usage line (flags, then positionals), but never wrapped to a terminal."""
    arguments = command.arguments
    flags = [f"[{_spelled(a)}]" for a in arguments if a.option_strings]
    positionals = [_spelled(a) for a in arguments if not a.option_strings]
    choices = command.subcommands
    if choices is not None:
        word = f"{choices.metavar or 'COMMAND'} ..."
        positionals.append(word if choices.required else f"[{word}]")
    return " ".join([command.name, *flags, *positionals])


def _default(action: argparse.Action, setting: EnvSetting | None) -> str:
    if setting is not None:
        return _value(setting.default)
    if not action.option_strings:
        return "required"
    if not _takes_value(action):
        return _value(False)
    if action.default is None or action.default == argparse.SUPPRESS:
        return "none"
    return _value(action.default)


def _command_section(command: Command) -> list[str]:
    lines = [f"### `{command.name}`", ""]
    if not command.words:
        lines += ["With no command, serves until stopped (Ctrl+C, SIGTERM).", ""]
    elif command.help:
        lines += [f"{command.help[0].upper()}{command.help[1:]}.", ""]
    lines += ["```sh", _usage(command), "```", ""]
    arguments = command.arguments
    if not arguments:
        return lines
    lines += ["| argument | meaning | default | variable |", "|---|---|---|---|"]
    for action in arguments:
        setting = variable_of(action)
        meaning = action.help or ""
        if setting is not None:
            meaning = meaning.removesuffix(flag_help_suffix(setting.variable))
        variable = f"`{setting.variable}`" if setting is not None else ""
        row = [f"`{_spelled(action)}`", _cell(meaning), _default(action, setting), variable]
        lines.append(f"| {' | '.join(row)} |")
    return [*lines, ""]


def _flags_by_variable(found: Sequence[Command]) -> dict[str, str]:
    """Variable -> the flags naming it: `--db` (of `run.py`, and any command), `--ttl` (token)."""
    where: dict[str, dict[str, list[str]]] = {}
    for command in found:
        for action in command.arguments:
            setting = variable_of(action)
            if setting is not None and action.option_strings:
                spelled = "/".join(action.option_strings)
                names = where.setdefault(setting.variable, {}).setdefault(spelled, [])
                names.append(" ".join(command.words))
    return {
        variable: ", ".join(
            f"`{spelled}`" if "" in names else f"`{spelled}` ({', '.join(names)})"
            for spelled, names in spellings.items()
        )
        for variable, spellings in where.items()
    }


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole reference, as markdown."""
    found = commands(parser)
    lines = [_INTRO]
    for command in found:
        if command.arguments or command.subcommands is None:
            lines += _command_section(command)
    lines += [
        "## Environment variables",
        "",
        "Each one sets a field of the server's `Settings`; a flag that names the same variable wins.",
        "",
        "| variable | setting | default | accepts | meaning | flag |",
        "|---|---|---|---|---|---|",
    ]
    flags = _flags_by_variable(found)
    for setting in ENV_SETTINGS:
        row = [
            f"`{setting.variable}`",
            f"`{setting.field}`",
            _value(setting.default),
            _cell(setting.accepts),
            _cell(setting.help),
            flags.get(setting.variable, ""),
        ]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diagnoxix.reference", description="Print (or --write) docs/configuration.md."
    )
    parser.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE_PATH.name}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE_PATH.relative_to(REPO_ROOT)}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
