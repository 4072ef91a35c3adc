"""Every command, option and positional of ``nnunet-transfer`` has a help text (``nnunet-transfer CMD -h`` explains
each one)."""

from __future__ import annotations

import argparse
from typing import Iterator, List, Tuple

from nnunet_transfer.cli.main import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[Tuple[str, argparse.Action]]:
    """``(command path, action)`` for every action of ``parser`` and of its subcommands, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([name], name, help=helped.get(name))
                yield from _walk(sub, f"{path} {name}")
        else:
            yield path, action


def _missing_help(parser: argparse.ArgumentParser) -> List[str]:
    return [f"{path}: {'/'.join(action.option_strings) or action.dest}"
            for path, action in _walk(parser, parser.prog)
            if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS]


def test_every_command_option_and_positional_has_help():
    parser = build_parser()
    assert len(list(_walk(parser, parser.prog))) > 100  # the walk reaches into the subcommands
    assert _missing_help(parser) == []


def test_the_walk_finds_an_option_without_help():
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("run", help="run it")
    p.add_argument("-d", type=int)
    p.add_argument("target")
    sub.add_parser("quiet")
    assert _missing_help(parser) == ["tool run: -d", "tool run: target", "tool quiet: quiet"]


def test_every_help_text_renders():
    """``%(default)s`` and other format fields in the help texts are valid: every ``-h`` page formats."""
    parser = build_parser()
    pages = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            pages += [sub.format_help() for sub in action.choices.values()]
    assert len(pages) > 15 and all(pages)
