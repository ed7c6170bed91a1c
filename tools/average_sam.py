"""Average the weights of checkpoints of one training run into one model.

    sa-engine average --output out/avg out/models14/sae_tiny_step250_*.pth \\
        out/models14/sae_tiny_step500_*.pth out/models14/sae_tiny_step750_*.pth

Wiring only: averages with `sam_core.training.average_checkpoints` and saves
`<name>_<sha256[:8]>.pth` (the official state-dict layout) plus a JSON of its config and sources.
"""

from __future__ import annotations

from sam_core.command_line import command_parser
from sam_core.console import configure_logging, stderr_line
from sam_core.training import average_checkpoints
from tools.model_flags import add_model_arguments, model_config
from tools.weights_files import add_output_arguments, write_weights


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("average", __doc__)
    parser.add_argument("checkpoints", nargs="+", help="two or more weights files (paths, URLs or model names)")
    add_output_arguments(parser, "averaged")
    add_model_arguments(parser, image_size_help="input side in pixels (default: the model's)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = model_config(args)
        model = average_checkpoints(config, args.checkpoints)
    except ValueError as error:  # CheckpointError included
        parser.error(str(error))
    path = write_weights(model, args.output, args.name or args.model, {"averaged": list(args.checkpoints)})
    stderr_line(f"saved {path}, the mean of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
