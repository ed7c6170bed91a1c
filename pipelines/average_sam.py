"""Average the weights of checkpoints of one training run into one model.

    python -m pipelines.average_sam --out out/avg out/models14/sae_tiny_step250_*.pth \\
        out/models14/sae_tiny_step500_*.pth out/models14/sae_tiny_step750_*.pth

Wiring only: averages with `sam_core.training.average_checkpoints` and saves
`<name>_<sha256[:8]>.pth` (the official state-dict layout) plus a JSON of its config and sources.
"""

from __future__ import annotations

import argparse
import json
import sys

from sam_core.config import PRESETS, SamConfig
from sam_core.training import average_checkpoints, save_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="two or more weights files (paths, URLs or model names)")
    parser.add_argument("--out", required=True, help="folder for the averaged weights")
    parser.add_argument("--name", default=None, help="file stem of the weights (default: the model name)")
    parser.add_argument("--model", default="sae_tiny", choices=sorted(PRESETS), help="architecture (default sae_tiny)")
    parser.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the model's)")
    args = parser.parse_args(argv)
    try:
        config = SamConfig.preset(args.model, args.image_size)
        model = average_checkpoints(config, args.checkpoints)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = save_weights(model, args.out, args.name or args.model)
    sources = {"config": config.to_dict(), "averaged": list(args.checkpoints)}
    path.with_suffix(".json").write_text(json.dumps(sources, indent=2))
    print(f"saved {path}, the mean of {len(args.checkpoints)} checkpoints", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
