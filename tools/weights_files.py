"""What the command lines that write a weights file share: their output flags, and the file with
its JSON of config and sources beside it (`<name>_<sha256[:8]>.pth` and `.json`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sam_core.modeling.sam import Sam
from sam_core.training import save_weights


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--output and --name; `what` names the weights in --output's help."""
    parser.add_argument("--output", required=True, help=f"folder for the {what} weights")
    parser.add_argument("--name", default=None, help="file stem of the weights (default: the model name)")


def write_weights(model: Sam, directory: str | Path, stem: str, sources: dict[str, Any]) -> Path:
    """Save `model` in `directory` as `<stem>_<sha256[:8]>.pth` with a JSON of its config and
    `sources` beside it; returns the weights' path."""
    path = save_weights(model, directory, stem)
    path.with_suffix(".json").write_text(json.dumps({"config": model.config.to_dict(), **sources}, indent=2))
    return path
