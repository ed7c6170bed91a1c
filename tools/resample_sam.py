"""Write weights made for one input size as weights for another, with no training.

    sa-engine resample out/sae_tiny_28898b97.pth --image-size 512 --output out/m512

Same patch size, a finer patch grid: the encoder's position tables are resampled
(`sam_core.checkpoints.resample_position_tables`), every other tensor is kept as it is. Wiring
only: loads with `load_sam(..., resample_positions=True)` and saves `<name>_<sha256[:8]>.pth` (the
official state-dict layout) plus a JSON of its config and source. `sa-engine evaluate --image-size N`
scores the same model without writing it.
"""

from __future__ import annotations

from sam_core.checkpoints import load_sam
from sam_core.command_line import command_parser
from sam_core.console import configure_logging, stderr_line
from tools.model_flags import RESAMPLED, add_model_arguments, model_config
from tools.weights_files import add_output_arguments, write_weights


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("resample", __doc__)
    parser.add_argument("checkpoint", help="weights file (path, URL or model name) made for any input size")
    add_output_arguments(parser, "resampled")
    add_model_arguments(parser, image_size_help=RESAMPLED)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = model_config(args)
        model = load_sam(config, args.checkpoint, resample_positions=True)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = write_weights(model, args.output, args.name or args.model, {"resampled_from": args.checkpoint})
    stderr_line(f"saved {path}, {args.checkpoint} at {config.image_size} px input")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
