"""Write weights made for one input size as weights for another, with no training.

    python -m tools.resample_sam out/sae_tiny_28898b97.pth --image-size 512 --out out/m512

Same patch size, a finer patch grid: the encoder's position tables are resampled
(`sam_core.checkpoints.resample_position_tables`), every other tensor is kept as it is. Wiring
only: loads with `load_sam(..., resample_positions=True)` and saves `<name>_<sha256[:8]>.pth` (the
official state-dict layout) plus a JSON of its config and source. `evaluate_sam --image-size N`
scores the same model without writing it.
"""

from __future__ import annotations

import argparse

from sam_core.checkpoints import load_sam
from sam_core.console import stderr_line
from tools.model_flags import RESAMPLED, add_model_arguments, model_config
from tools.weights_files import add_output_arguments, write_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="weights file (path, URL or model name) made for any input size")
    add_output_arguments(parser, "resampled")
    add_model_arguments(parser, image_size_help=RESAMPLED)
    args = parser.parse_args(argv)
    try:
        config = model_config(args)
        model = load_sam(config, args.checkpoint, resample_positions=True)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = write_weights(model, args.out, args.name or args.model, {"resampled_from": args.checkpoint})
    stderr_line(f"saved {path}, {args.checkpoint} at {config.image_size} px input")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
