"""Average the weights of checkpoints of one training run into one model.

    python -m pipelines.average_sam --out out/avg out/models14/sae_tiny_step250_*.pth \\
        out/models14/sae_tiny_step500_*.pth out/models14/sae_tiny_step750_*.pth

Wiring only: averages with `sam_core.training.average_checkpoints` and saves
`<name>_<sha256[:8]>.pth` (the official state-dict layout) plus a JSON of its config and sources.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.weights_files import add_output_arguments, write_weights
from sam_core.config import SamConfig
from sam_core.training import average_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="two or more weights files (paths, URLs or model names)")
    add_output_arguments(parser, "averaged")
    args = parser.parse_args(argv)
    try:
        config = SamConfig.preset(args.model, args.image_size)
        model = average_checkpoints(config, args.checkpoints)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = write_weights(model, args, {"averaged": list(args.checkpoints)})
    print(f"saved {path}, the mean of {len(args.checkpoints)} checkpoints", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
