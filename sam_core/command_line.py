"""What every sa-engine command line shares: the parser (help with each default shown once, usage
errors as one line and exit status 2), the one-line error for a missing or unusable input, the
`--storage-options` flag, and flag help read from a dataclass's attribute docstrings."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any, NoReturn

import docstring_parser

PROG = "sa-engine"
"""The console command; each command line's usage reads `sa-engine <subcommand>`."""
USAGE_ERROR = 2
"""Exit status of a bad flag and of a missing or unusable input."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends `(default: X)` to a flag's help, once: only where
    the default is a value (not None, a bool or empty) and the help does not already name one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if action.option_strings and _is_value(action.default) and "default" not in help:
            return f"{help} (default: %(default)s)" if help else "default: %(default)s"
        return help


def _is_value(default: object) -> bool:
    """Whether help should show `default`: not for None, a flag's bool or an empty container."""
    if default is None or isinstance(default, bool) or default is argparse.SUPPRESS:
        return False
    return not (isinstance(default, list | tuple | dict) and not default)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose help uses HelpFormatter, that takes flags by their full names only
    (no `--out` for `--output`), and whose usage errors are one line, `error: ...`, and exit
    status 2. Its subparsers are CommandParsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"error: {message}\n")


def command_parser(subcommand: str, description: str | None) -> CommandParser:
    """The parser of `sa-engine <subcommand>`; `description` is the module's docstring."""
    return CommandParser(prog=f"{PROG} {subcommand}", description=description)


def input_error(message: str) -> int:
    """Say that an input is missing or unusable, as one line `error: message` on stderr; returns
    the exit status, 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def json_object(text: str) -> dict[str, Any]:
    """A flag's JSON object, e.g. '{"anon": true}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


STORAGE_OPTIONS_HELP = 'fsspec options as JSON, e.g. \'{"anon": true}\' or \'{"client_kwargs": {"endpoint_url": ...}}\''


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """--storage-options: fsspec options (a JSON object) for every URI the command reads or writes."""
    parser.add_argument("--storage-options", type=json_object, default={}, help=STORAGE_OPTIONS_HELP)


@functools.cache
def attribute_help(cls: type) -> dict[str, str]:
    """The attribute docstrings of the dataclass `cls` by field name, each on one line: the help of
    the flags that set them, written once beside the field."""
    params = docstring_parser.parse_from_object(cls).params
    return {p.arg_name: " ".join(p.description.split()) for p in params if p.args[0] == "attribute" and p.description}
