"""The command lines' messages: `logging`, one line each on stderr in one format."""

from __future__ import annotations

import logging
import re

from sam_core.console import configure_logging, stderr_line, stderr_logger

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def test_messages_are_one_line_each_in_one_format_and_other_libraries_say_only_warnings(capsys):
    configure_logging()
    configure_logging()  # again: still one handler, so still one line per message
    stderr_logger("amg")("hashed 3 images")
    stderr_line("report: index.html")
    logging.getLogger("some_library").info("chatter")
    logging.getLogger("some_library").warning("careful")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(rf"{STAMP} \[test_console\] hashed 3 images", lines[0])
    assert re.fullmatch(rf"{STAMP} \[test_console\] report: index.html", lines[1])
    assert re.fullmatch(rf"{STAMP} \[test_console\] careful", lines[2])
