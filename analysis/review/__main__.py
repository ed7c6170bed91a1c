"""Review, correct and add masks of a release's images in the browser, with SAM's help.

Serves the app on 127.0.0.1 (another --host is allowed, with a warning): the images of the release
(a seeded --sample, as `sa-engine audit export` draws it, or the --images named) with their masks;
each image is embedded once (cached in memory and under --cache-dir), so a click costs only the
prompt encoder and the mask decoder. Every save writes the image's corrected record, versioned, to
the --corrections folder (any fsspec URI) with a COCO export beside them; `sa-engine audit` scores
that folder and `sa-engine train --corrections` fine-tunes on it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from analysis.review.embeddings import DEFAULT_CACHE_DIR
from analysis.review.server import ReviewApp, ReviewServer
from sam_core.command_line import CommandParser, add_storage_options, command_parser, input_error
from sam_core.console import configure_logging
from sam_core.modeling.registry import MODEL_PRESETS


def _parser() -> CommandParser:
    parser = command_parser("review", __doc__)
    parser.add_argument("--release", required=True, help="the release to review (any fsspec URI)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sample", type=int, metavar="N", help="review a seeded sample of N images")
    which.add_argument("--images", type=int, nargs="+", metavar="ID", help="review these image ids")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--corrections", required=True, help="the folder saves go to (any fsspec URI)")
    parser.add_argument("--model", default="sae_tiny", choices=sorted(MODEL_PRESETS), help="architecture")
    parser.add_argument(
        "--checkpoint", default=None, help="weights: a path, URL or model name (default: the model's shipped weights)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on; any other than loopback is warned about"
    )
    parser.add_argument("--port", type=int, default=8765, help="port to serve on (0: a free one)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where image embeddings are cached")
    parser.add_argument("--memory-images", type=int, default=8, help="image embeddings held in memory")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    parser.add_argument(
        "--embeddings", help="for similar images of a release made before embeddings: the --output of `sa-engine embed`"
    )
    add_storage_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be >= 1")
    if args.memory_images < 1:
        parser.error("--memory-images must be >= 1")
    configure_logging()
    try:
        app = ReviewApp.open(
            args.release,
            args.corrections,
            image_ids=args.images,
            sample=args.sample,
            seed=args.seed,
            model=args.model,
            checkpoint=args.checkpoint,
            cache_dir=args.cache_dir,
            memory_images=args.memory_images,
            storage_options=args.storage_options,
            device=args.device,
            embeddings=args.embeddings,
        )
        server = ReviewServer(app, args.host, args.port)
    except (ValueError, OSError) as error:  # ReleaseError, AuditInputError, CheckpointError are ValueErrors
        return input_error(str(error))
    print(f"review: {server.url} ({len(app.catalog)} images, corrections -> {args.corrections})", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
