"""What the command lines that write a weights file share: their output flags, and the file with
its JSON of config and sources beside it (`<name>_<sha256[:8]>.pth` and `.json`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sam_core.config import PRESETS
from sam_core.sam import Sam
from sam_core.training import save_weights


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--out, --name, --model and --image-size; `what` names the weights in --out's help."""
    parser.add_argument("--out", required=True, help=f"folder for the {what} weights")
    parser.add_argument("--name", default=None, help="file stem of the weights (default: the model name)")
    parser.add_argument("--model", default="sae_tiny", choices=sorted(PRESETS), help="architecture (default sae_tiny)")
    parser.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the model's)")


def write_weights(model: Sam, args: argparse.Namespace, sources: dict[str, Any]) -> Path:
    """Save `model` under args.out as args.name (or the model name) with a JSON of its config and
    `sources` beside it; returns the weights' path."""
    path = save_weights(model, args.out, args.name or args.model)
    path.with_suffix(".json").write_text(json.dumps({"config": model.config.to_dict(), **sources}, indent=2))
    return path
