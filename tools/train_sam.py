"""Train or fine-tune a SAM on a release (ours, or a folder of SA-1B tars).

    python -m tools.train_sam --release out/scenes/train --out out/models --steps 3000
    python -m tools.train_sam --release s3://bucket/release --model vit_b --checkpoint vit_b \\
        --trainable mask_decoder --device cuda --precision bfloat16 --out out/models
    python -m tools.train_sam --release out/scenes/train --checkpoint sae_tiny --image-size 640 --out out/m640

Wiring only: reads the release with `curation.release`, trains with `sam_core.training`, and
saves `<name>_<sha256[:8]>.pth` (the official state-dict layout) plus a JSON of its config and
settings. Runs without Ray.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields

import torch

from curation.images import ImageDecodeError, decode_image
from curation.release import iter_release
from sam_core.checkpoints import load_sam
from sam_core.console import stderr_line
from sam_core.training import Trainer, TrainingImage, TrainSettings, prepare_training_image
from tools.model_flags import RESAMPLED, add_model_arguments, model_config
from tools.weights_files import add_output_arguments, write_weights


def load_training_images(release: str, image_size: int, limit: int | None) -> list[TrainingImage]:
    """Decoded, resized images of a release with their ground-truth RLEs; images without masks
    or that do not decode are counted and skipped (they cannot be trained on)."""
    images, skipped = [], 0
    for item in iter_release(release):
        if limit is not None and len(images) >= limit:
            break
        annotations = item.record["annotations"]
        try:
            pixels = decode_image(item.image_bytes)
        except ImageDecodeError as error:
            stderr_line(f"skipping image {item.record['image'].get('image_id')}: {error}")
            skipped += 1
            continue
        if not annotations:
            skipped += 1
            continue
        images.append(prepare_training_image(pixels, [a["segmentation"] for a in annotations], image_size))
        if len(images) % 500 == 0:
            print(f"\rloaded {len(images)} training images", end="", file=sys.stderr, flush=True)
    stderr_line(f"\rloaded {len(images)} training images, skipped {skipped}")
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, help="release prefix or folder of .tar shards (any fsspec URI)")
    add_output_arguments(parser, "trained")
    add_model_arguments(
        parser, "weights to start from: a path, URL or model name; default: random init", image_size_help=RESAMPLED
    )
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="save every N steps (0: only at the end)")
    defaults = TrainSettings()
    for field in fields(TrainSettings):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(defaults, field.name)
        if field.name == "trainable":
            parser.add_argument(
                flag,
                default=",".join(value),
                help=f"comma-separated parts or modules inside them, e.g. mask_decoder.iou_prediction_head (default {','.join(value)})",
            )
        elif field.name == "focal_alpha":
            parser.add_argument(flag, type=float, default=value, help=f"(default {value}; negative: none)")
        elif field.name == "max_grad_norm":
            parser.add_argument(flag, type=float, default=value, help=f"gradient clipping norm (default {value})")
        elif field.name == "loss_resolution":
            parser.add_argument(flag, type=int, default=value, help="loss side in pixels (default: the image size)")
        elif field.name == "flip":
            parser.add_argument("--no-flip", dest="flip", action="store_false", help="no left-right mirroring")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default {value})")
    args = parser.parse_args(argv)

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
    model = load_sam(config, args.checkpoint, resample_positions=True).to(args.device)
    images = load_training_images(args.release, model.config.image_size, args.max_images)
    if len(images) < settings.images_per_step:
        parser.error(f"{args.release} gave {len(images)} usable images, fewer than --images-per-step")
    try:
        trainer = Trainer(model, images, settings)
    except ValueError as error:
        parser.error(str(error))
    stem = args.name or args.model

    def checkpoint(step: int) -> None:
        sources = {
            "settings": asdict(settings),
            "step": step,
            "release": args.release,
            "start": args.checkpoint,
            "images": len(images),
        }
        path = write_weights(model, args.out, f"{stem}_step{step}" if step < settings.steps else stem, sources)
        stderr_line(f"\nsaved {path}")

    trainer.train(checkpoint=checkpoint, checkpoint_every=args.checkpoint_every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
