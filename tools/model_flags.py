"""The model-selection flags of the local command lines, written once: --model, --checkpoint and
--image-size, and the SamConfig they select."""

from __future__ import annotations

import argparse

from sam_core.modeling.config import PRESETS, SamConfig

SHIPPED_OR_GIVEN = "weights: a path, URL or model name (default: the model's shipped weights)"
"""--checkpoint's help where the model's shipped weights are the default."""
RESAMPLED = (
    "input side in pixels (default: the model's); weights made for another size have their position tables resampled"
)
"""--image-size's help where the command loads weights with their position tables resampled."""


def add_model_arguments(
    parser: argparse.ArgumentParser, checkpoint_help: str | None = None, image_size_help: str | None = None
) -> None:
    """--model (default sae_tiny); --checkpoint with `checkpoint_help` and --image-size with
    `image_size_help`, each only where its help is given."""
    parser.add_argument("--model", default="sae_tiny", choices=sorted(PRESETS), help="architecture")
    if checkpoint_help is not None:
        parser.add_argument("--checkpoint", default=None, help=checkpoint_help)
    if image_size_help is not None:
        parser.add_argument("--image-size", type=int, default=None, help=image_size_help)


def model_config(args: argparse.Namespace) -> SamConfig:
    """The architecture the flags select; ValueError for an input side the patches do not divide."""
    return SamConfig.preset(args.model, getattr(args, "image_size", None))
