"""Write weights made for one input size as weights for another, with no training.

    python -m pipelines.resample_sam out/sae_tiny_28898b97.pth --image-size 512 --out out/m512

Same patch size, a finer patch grid: the encoder's position tables are resampled
(`sam_core.checkpoints.resample_position_tables`), every other tensor is kept as it is. Wiring
only: loads with `load_sam(..., resample_positions=True)` and saves `<name>_<sha256[:8]>.pth` (the
official state-dict layout) plus a JSON of its config and source. `evaluate_sam --image-size N`
scores the same model without writing it.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.weights_files import add_output_arguments, write_weights
from sam_core.checkpoints import load_sam
from sam_core.config import SamConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="weights file (path, URL or model name) made for any input size")
    add_output_arguments(parser, "resampled")
    args = parser.parse_args(argv)
    try:
        config = SamConfig.preset(args.model, args.image_size)
        model = load_sam(config, args.checkpoint, resample_positions=True)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = write_weights(model, args, {"resampled_from": args.checkpoint})
    print(f"saved {path}, {args.checkpoint} at {config.image_size} px input", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
