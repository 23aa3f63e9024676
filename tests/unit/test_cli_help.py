"""Every command's --help shows an example, every option says what it does, and every example parses."""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import main

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_examples_that_the_command_accepts(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output, result.output
    examples = [line.strip() for line in result.output.split("Examples:", 1)[1].splitlines() if line.strip()]
    assert examples
    command = main.commands[name]
    for example in examples:
        words = shlex.split(example, comments=True)
        if "reconcile" not in words:
            continue
        words = words[words.index("reconcile") + 1:]
        words = words[:words.index(">")] if ">" in words else words
        assert words[0] == name, example
        # Parsing checks every option and value as the real command would, without running it.
        with command.make_context(name, words[1:]) as ctx:
            assert ctx.params is not None


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_a_description(name: str) -> None:
    command = main.commands[name]
    bare = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert bare == [], f"reconcile {name}: options without help: {bare}"


def test_the_top_level_help_has_examples() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "Examples:" in result.output and "reconcile apply" in result.output
