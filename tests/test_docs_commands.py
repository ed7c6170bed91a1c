"""Every command in the README and the docs is one that runs today.

The fenced shell blocks of README.md, docs/*.md, benchmarks/README.md and the model card are read; each command
that runs `sa-engine SUBCOMMAND` (also `.venv/bin/sa-engine`), `python -m MODULE`, `python PATH.py`
(also `.venv/bin/python`, and after `ray job submit ... --`) or `make TARGET` is one test case: the
subcommand, module or file exists, and every `--flag` the command uses appears in its own `--help`,
which is produced in this process (one import per module, no subprocess). Relative links between
the pages are checked too.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
    ROOT / "sam_core" / "weights" / "MODEL_CARD.md",
]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
"""Fenced blocks read as commands; a block without a language is read too, a line at a time, when
the line starts with a command (other languages, e.g. `text` and `python`, are never read)."""
MIN_COMMANDS = 30
"""The pages hold about 45 commands today; far fewer means the extraction broke."""

PYTHON = re.compile(r"(?:.*/)?python(?:3(?:\.\d+)?)?")
CONSOLE = re.compile(r"(?:.*/)?sa-engine")
"""The console command; its `--help` comes from `sa_engine.cli`, the module it runs."""
CONTROL = re.compile(r"[();<>|&]+")
"""A shell control operator or redirection: it ends one simple command."""
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    kind: str  # "console" (sa-engine), "module" (python -m), "path" (python file.py), "script" (bash file.sh),
    # "make", or "unparsable"
    target: str
    args: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.target}"


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the block's first line, lines) of every fenced block."""
    blocks, language, start, lines, fence = [], None, 0, [], None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if opening:
                fence, language, start, lines = opening.group(1), opening.group(2).lower(), number + 1, []
        elif stripped.startswith(fence) and not stripped[len(fence) :].strip():
            blocks.append((language, start, lines))
            fence = None
        else:
            lines.append(line)
    return blocks


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Backslash-continued lines joined, comment lines and blank lines left out."""
    joined, pending, pending_start = [], "", 0
    for offset, line in enumerate(lines):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            pending_start = first + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((pending_start, pending + line))
        pending = ""
    if pending:
        joined.append((pending_start, pending))
    return joined


def shell_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def simple_commands(words: list[str]) -> list[list[str]]:
    """The words split at control operators (`&&`, `;`, `|`, `&`, redirections)."""
    commands, current = [], []
    for word in words:
        if CONTROL.fullmatch(word):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(word)
    if current:
        commands.append(current)
    return commands


def starts_with_command(words: list[str]) -> bool:
    rest = [w for w in words if not ASSIGNMENT.fullmatch(w)] or [""]
    return bool(PYTHON.fullmatch(rest[0]) or CONSOLE.fullmatch(rest[0])) or rest[0] in ("make", "bash")


def commands_in(words: list[str], doc: str, line: int, text: str) -> list[Command]:
    found = []
    for command in simple_commands(words):
        programs = [w for w in command if not ASSIGNMENT.fullmatch(w)]
        if programs and programs[0] == "make":
            targets = [w for w in programs[1:] if not w.startswith("-") and "=" not in w]
            found.extend(Command(doc, line, text, "make", target) for target in targets)
            continue
        if len(programs) >= 2 and programs[0] == "bash" and programs[1].endswith(".sh"):
            found.append(Command(doc, line, text, "script", programs[1], tuple(programs[2:])))
            continue
        for index, word in enumerate(command):
            if CONSOLE.fullmatch(word):
                found.append(Command(doc, line, text, "console", "sa_engine.cli", tuple(command[index + 1 :])))
                break
            if not PYTHON.fullmatch(word):
                continue
            rest = command[index + 1 :]
            if len(rest) >= 2 and rest[0] == "-m":
                found.append(Command(doc, line, text, "module", rest[1], tuple(rest[2:])))
            elif rest and rest[0].endswith(".py"):
                found.append(Command(doc, line, text, "path", rest[0], tuple(rest[1:])))
            break
    return found


def extract_commands(path: Path) -> list[Command]:
    doc = path.relative_to(ROOT).as_posix()
    found = []
    for language, first, lines in fenced_blocks(path.read_text()):
        if language not in SHELL_LANGUAGES and language != "":
            continue
        for number, text in logical_lines(lines, first):
            try:
                words = shell_words(text)
            except ValueError as error:
                if language:
                    found.append(Command(doc, number, text, "unparsable", str(error)))
                continue
            if language or starts_with_command(words):
                found.extend(commands_in(words, doc, number, text))
    return found


ALL_COMMANDS = [command for path in DOCS if path.exists() for command in extract_commands(path)]


def flags(args: tuple[str, ...]) -> list[str]:
    named = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            named.append(arg.split("=", 1)[0])
    return named


def module_for(command: Command) -> str:
    """The module whose --help names the command's flags; a script X.sh hands its flags to the
    module X.py beside it."""
    if command.kind in ("module", "console"):
        assert importlib.util.find_spec(command.target) is not None, f"no module {command.target}"
        return command.target
    path = ROOT / command.target
    assert path.is_file(), f"no file {command.target} in the checkout"
    if command.kind == "script":
        path = path.with_suffix(".py")
        assert path.is_file(), f"{command.target} has no module {path.name} beside it to take its flags"
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@functools.cache
def help_text(module_name: str, *subcommands: str) -> str:
    """What `python -m MODULE [SUBCOMMAND ...] --help` prints, produced in this process."""
    module = importlib.import_module(module_name)
    main = getattr(module, "main", None)
    assert callable(main), f"{module_name} has no main()"
    argv = [*subcommands, "--help"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if inspect.signature(main).parameters:
                main(argv)
            else:
                with mock.patch.object(sys, "argv", [module_name, *argv]):
                    main()
        except SystemExit as exit:
            assert exit.code in (0, None), f"{module_name} {' '.join(argv)} exited {exit.code}: {err.getvalue()}"
        else:
            raise AssertionError(f"{module_name} {' '.join(argv)} did not stop at --help")
    return out.getvalue()


def subcommand_of(help: str, args: tuple[str, ...]) -> str | None:
    """The command's first word, when the top-level help lists it among its subcommands."""
    if not args or args[0].startswith("-"):
        return None
    choices = re.search(r"\{([\w,-]+)\}", help)
    return args[0] if choices and args[0] in choices.group(1).split(",") else None


@functools.cache
def make_targets() -> frozenset[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.\-/$() ]+?)\s*::?(?!=)", line)
        if rule and not line.startswith("\t"):
            targets.update(rule.group(1).split())
    return frozenset(targets)


def test_the_pages_hold_commands():
    assert all(path.exists() for path in DOCS), [str(p) for p in DOCS if not p.exists()]
    kinds = {command.kind for command in ALL_COMMANDS}
    assert len(ALL_COMMANDS) >= MIN_COMMANDS, f"only {len(ALL_COMMANDS)} commands found"
    assert {"console", "module", "path", "make"} <= kinds, kinds


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[command.id for command in ALL_COMMANDS])
def test_command_runs_today(command: Command):
    assert command.kind != "unparsable", f"the shell cannot parse: {command.text} ({command.target})"
    if command.kind == "make":
        assert command.target in make_targets(), f"the Makefile has no target {command.target!r}"
        return
    module = module_for(command)
    subcommands: tuple[str, ...] = ()
    help = help_text(module)
    while subcommand := subcommand_of(help, command.args[len(subcommands) :]):  # e.g. sa-engine audit export
        subcommands += (subcommand,)
        help = help_text(module, *subcommands)
    missing = [flag for flag in flags(command.args) if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help)]
    assert not missing, f"{command.text.strip()}\n{module} has no {', '.join(missing)}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    names, in_fence = set(), False
    for line in path.read_text().splitlines():
        if re.match(r"\s*(```|~~~)", line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            names.add(github_anchor(line.lstrip("#")))
    return names


LINKS = [
    (path, target)
    for path in DOCS
    if path.exists()
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    if not re.match(r"[a-z]+:", target)
]


@pytest.mark.parametrize("path, target", LINKS, ids=[f"{p.relative_to(ROOT).as_posix()}->{t}" for p, t in LINKS])
def test_relative_link_resolves(path: Path, target: str):
    file, _, anchor = target.partition("#")
    linked = (path.parent / file).resolve() if file else path
    assert linked.exists(), f"{path.relative_to(ROOT)} links to a missing {file}"
    assert linked.is_relative_to(ROOT), f"{path.relative_to(ROOT)} links outside the checkout: {target}"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{linked.relative_to(ROOT)} has no heading for #{anchor}"
