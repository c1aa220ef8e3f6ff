"""docs/flags.md, generated from the commands' own parsers.

    python -m utils.flags_doc > docs/flags.md        # regenerate after changing a parser

Each command's parser is the one that answers ``python X.py --help``: :func:`command_parser`
runs the command as ``python X.py --help`` would (``runpy``, ``__name__ == "__main__"``) and
catches the parser whose ``print_help`` is called, before anything prints or exits. So the
page follows the code wherever a command builds its parser, and a parser change without
regenerating the page makes ``tests/test_docs.py`` fail.

The page is rendered from the parser's actions (tables per option group), not from
``format_help()``'s text, whose layout depends on the terminal width and the Python version.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The commands that come first on docs/flags.md; the other scripts beside main.py follow by name.
FIRST = ("main.py", "test.py", "localize.py")
#: Commands run as modules (``python -m ...``), after the scripts.
MODULES = ("-m dataset.make_demo", "-m utils.visualize", "-m utils.plots")


def commands() -> tuple:
    """The commands of docs/flags.md: every script beside main.py that runs as ``__main__``, then MODULES.

    Found, not listed, so that a new or renamed entry point lands on the page by regenerating it."""
    scripts = sorted(p.name for p in REPO.glob("*.py") if '__name__ == "__main__"' in p.read_text())
    return tuple([c for c in FIRST if c in scripts] + [c for c in scripts if c not in FIRST]) + MODULES


class _Parser(BaseException):
    """Carries the parser out of the command (a BaseException: no ``except Exception`` stops it)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of `command` (``"main.py"``, ``"benchmarks/x.py"`` or ``"-m dataset.make_demo"``).

    The command runs with the single argument ``--help``; the first parser that would print
    its help is returned instead (a pre-parser without ``-h`` is passed through). Raises
    LookupError when the command prints no help.
    """
    module = command[3:].strip() if command.startswith("-m ") else None
    path = None if module else REPO / command
    if path is not None and not path.is_file():
        raise LookupError(f"{command}: no such file in {REPO}")

    def grab(self, file=None):
        raise _Parser(self)

    saved_argv, saved_path, saved_help = sys.argv, list(sys.path), argparse.ArgumentParser.print_help
    sys.argv = [module or str(path), "--help"]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    argparse.ArgumentParser.print_help = grab
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules" (imported before)
            if module:
                runpy.run_module(module, run_name="__main__", alter_sys=False)
            else:
                runpy.run_path(str(path), run_name="__main__")
    except _Parser as found:
        return found.parser
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.print_help = saved_help
        sys.argv, sys.path[:] = saved_argv, saved_path
    raise LookupError(f"{command} --help printed no argparse help")


def option_strings(parser: argparse.ArgumentParser) -> set:
    """Every ``--flag`` (and ``-f``) the parser accepts."""
    return {s for action in parser._actions for s in action.option_strings}


def _cell(text) -> str:
    """One table cell: one line, ``|`` escaped, ``<name>`` kept visible (not taken for HTML)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return ""
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if isinstance(action, argparse._StoreFalseAction):
        return "on"
    if action.default is None or action.default is argparse.SUPPRESS or action.default == []:
        return "-"
    return f"`{str(action.default).replace(str(REPO) + '/', '')}`"  # a path in the checkout: as the user types it


def _meaning(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=prog)
        for name, value in list(params.items()):
            if hasattr(value, "__name__"):
                params[name] = value.__name__
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    text = text.replace(" (default: -)", "")
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        listed = ", ".join(str(c) for c in action.choices)
        if listed not in text:
            text += f" (one of: {listed})"
    return _cell(text)


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"`{name} ...`" if action.nargs in ("+", "*", argparse.REMAINDER) else f"`{name}`"
    metavar = f" {action.metavar}" if isinstance(action.metavar, str) and action.nargs != 0 else ""
    return ", ".join(f"`{s}{metavar}`" for s in action.option_strings)


def render_command(command: str, parser: argparse.ArgumentParser) -> str:
    """One ``## python <command>`` section: the description and a table per option group."""
    run = f"python {command}"
    lines = [f"## `{run}`", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS
                   and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = "options" if group.title == "optional arguments" else group.title  # Python < 3.10's name
        lines += [f"**{title}**", ""]
        if group.description:
            lines += [_cell(group.description), ""]
        lines += ["| flag | default | meaning |", "|---|---|---|"]
        lines += [f"| {_flag(a)} | {_default(a)} | {_meaning(a, parser.prog)} |" for a in actions]
        lines.append("")
    if parser.epilog:
        lines += [_cell(parser.epilog), ""]
    return "\n".join(lines)


def render(names=None) -> str:
    """The whole docs/flags.md (of `names`, default: :func:`commands`)."""
    names = commands() if names is None else names
    head = ["# Flags", "",
            "Every flag of every command, as its `--help` lists it. This page is generated from the parsers:",
            "do not edit it; after changing a parser run `python -m utils.flags_doc > docs/flags.md`",
            "(`tests/test_docs.py` fails until the page matches the code).", ""]
    head += [f"- [`python {c}`](#{_anchor(f'python {c}')})" for c in names] + [""]
    return "\n".join(head + [render_command(c, command_parser(c)) for c in names]).rstrip("\n") + "\n"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading (the rule tests/test_docs.py checks links with)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.flags_doc",
                                     description="Print docs/flags.md, generated from every command's parser.")
    parser.parse_args(argv)
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
