"""Train or fine-tune a SAM on a release (ours, or a folder of SA-1B tars).

    sa-engine train --release out/scenes/train --output out/models --steps 3000
    sa-engine train --release s3://bucket/release --model vit_b --checkpoint vit_b \\
        --trainable mask_decoder --device cuda --precision bfloat16 --output out/models
    sa-engine train --release out/scenes/train --checkpoint sae_tiny --image-size 640 --output out/m640
    sa-engine train --release out/release --corrections out/corrections --checkpoint sae_tiny \\
        --trainable mask_decoder --output out/tuned
    sa-engine train --release out/real/copy_paste_s1 --release out/scenes/train1500 --checkpoint sae_tiny \\
        --output out/real/m1

Wiring only: streams the release's images (`tools.release_samples`: read, decoded and resized
when a step reaches them, shuffled within a bounded buffer; several releases mixed in proportion
to their sizes; records whose size disagrees with their
JPEG are skipped and counted unless `--on-size-mismatch` says otherwise; with `--corrections`, only
the images saved in the review app's corrections folder, with their corrected masks), trains with
`sam_core.training`, and saves `<name>_<sha256[:8]>.pth` (the official state-dict layout) plus a
JSON of its config and settings. Runs without Ray.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import torch

from curation.corrections import CorrectionsError
from curation.record_size import RecordSizeError
from curation.release import ReleaseError
from sam_core.checkpoints import CheckpointError, load_sam
from sam_core.command_line import attribute_help, command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.training import NotEnoughImagesError, Trainer, TrainSettings
from tools.model_flags import RESAMPLED, add_model_arguments, model_config
from tools.release_samples import SIZE_MISMATCH_POLICIES, ReleaseSamples
from tools.weights_files import add_output_arguments, write_weights


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("train", __doc__)
    parser.add_argument(
        "--release",
        required=True,
        action="append",
        help="release prefix or folder of .tar shards (any fsspec URI); repeat it to mix finished releases "
        "in proportion to their sizes",
    )
    add_output_arguments(parser, "trained")
    add_model_arguments(
        parser, "weights to start from: a path, URL or model name; default: random init", image_size_help=RESAMPLED
    )
    parser.add_argument(
        "--corrections",
        help="a corrections folder of `sa-engine review` over the release: train only on its saved images, "
        "with their corrected masks (any fsspec URI)",
    )
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    parser.add_argument(
        "--shuffle-buffer",
        type=int,
        default=256,
        help="images (JPEG bytes, not pixels) held to shuffle each pass over the release (0: release order)",
    )
    parser.add_argument(
        "--on-size-mismatch",
        choices=SIZE_MISMATCH_POLICIES,
        default="skip",
        help="a record whose size disagrees with its JPEG: skip it and count it, stop with an error, "
        "or resize its masks to the JPEG's size (nearest)",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="save every N steps (0: only at the end)")
    defaults, docs = TrainSettings(), attribute_help(TrainSettings)
    for field in fields(TrainSettings):
        flag = "--" + field.name.replace("_", "-")
        value, help = getattr(defaults, field.name), docs.get(field.name, field.name.replace("_", " "))
        if field.name == "trainable":
            parser.add_argument(flag, default=",".join(value), help=f"{help} Comma-separated.")
        elif field.name == "focal_alpha":
            parser.add_argument(flag, type=float, default=value, help=f"{help} Negative: none.")
        elif field.name == "max_grad_norm":
            parser.add_argument(flag, type=float, default=value, help="gradient clipping norm")
        elif field.name == "loss_resolution":
            parser.add_argument(flag, type=int, default=value, help=help)
        elif field.name == "flip":
            parser.add_argument("--no-flip", dest="flip", action="store_false", help="no left-right mirroring")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help)
    args = parser.parse_args(argv)
    configure_logging()

    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings)}
    values["trainable"] = tuple(p for p in args.trainable.split(",") if p)
    if values["focal_alpha"] is not None and values["focal_alpha"] < 0:
        values["focal_alpha"] = None
    try:
        settings = TrainSettings(**values)
        config = model_config(args)
    except ValueError as error:
        parser.error(str(error))
    torch.manual_seed(settings.seed)  # the random initialisation
    try:
        model = load_sam(config, args.checkpoint, resample_positions=True).to(args.device)
    except CheckpointError as error:
        return input_error(str(error))
    release = args.release[0] if len(args.release) == 1 else args.release
    try:
        images = ReleaseSamples(
            release,
            model.config.image_size,
            limit=args.max_images,
            shuffle_buffer=args.shuffle_buffer,
            seed=settings.seed,
            on_size_mismatch=args.on_size_mismatch,
            corrections=args.corrections,
        )
        trainer = Trainer(model, images, settings)
    except ValueError as error:
        parser.error(str(error))
    stem = args.name or args.model

    def checkpoint(step: int) -> None:
        sources = {
            "settings": asdict(settings),
            "step": step,
            "release": release,
            "corrections": args.corrections,
            "start": args.checkpoint,
            "images": images.images_per_pass,
        }
        path = write_weights(model, args.output, f"{stem}_step{step}" if step < settings.steps else stem, sources)
        stderr_line(f"\nsaved {path}")

    try:
        trainer.train(checkpoint=checkpoint, checkpoint_every=args.checkpoint_every)
    except (NotEnoughImagesError, RecordSizeError) as error:
        return input_error(f"{args.release}: {error}")
    except (ReleaseError, CorrectionsError, OSError) as error:  # a release or corrections folder that does not read
        return input_error(str(error))
    finally:
        stderr_line(images.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
