"""The command reference keeps up with the parser: a new command or option that is not in
docs/cli.md (and, for a command, in the README's table) fails here, as sqlite-utils does."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from undying.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "cli.md").read_text()
README = (ROOT / "README.md").read_text()


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


def _section(command: str) -> str:
    """The text of docs/cli.md under ``### `undying COMMAND ...```, up to the next heading."""
    match = re.search(
        rf"^### `undying {re.escape(command)}\b[^\n]*\n(.*?)(?=^#{{1,3}} |\Z)",
        REFERENCE,
        re.MULTILINE | re.DOTALL,
    )
    assert match, f"docs/cli.md has no section '### `undying {command} ...`'"
    return match.group(1)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_and_option_is_documented(command: str) -> None:
    section = _section(command)
    missing = [o for o in _options(_commands()[command]) if o != "--db" and f"`{o}" not in section]
    assert not missing, f"docs/cli.md, section {command}: document {missing}"
    assert re.search(rf"^\| `{re.escape(command)}\b", README, re.MULTILINE), (
        f"README's command table has no row for {command}"
    )


def test_global_options_are_documented() -> None:
    top = [o for o in _options(build_parser()) if o != "--db"]
    assert "`--db URL`" in REFERENCE and not [o for o in top if f"`{o}" not in REFERENCE]


def test_the_reference_documents_no_command_that_does_not_exist() -> None:
    documented = set(re.findall(r"^### `undying ([a-z-]+)", REFERENCE, re.MULTILINE))
    assert documented == set(_commands())
