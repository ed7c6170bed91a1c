"""Segment one photo and write an overlay PNG: the three masks for one point, or all automatic masks.

    sa-engine demo --image photo.jpg --output overlay.png [--automatic]
    sa-engine demo --image photo.jpg --output overlay.png --model vit_b --checkpoint vit_b

By default the project's own small model (`sae_tiny`) runs with its shipped weights. A
published architecture without --checkpoint keeps random initial weights: the run exercises
the whole path but its masks carry no meaning, and it says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from sam_core.amg import MaskGenerator, MaskGeneratorSettings
from sam_core.checkpoints import CheckpointError, bundled_generator_overrides, checkpoint_or_shipped, load_sam
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.predictor import SamPredictor
from tools.model_flags import SHIPPED_OR_GIVEN, add_model_arguments

# One colour per multimask output, RGB.
_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200]], dtype=np.float32)


def draw_overlay(image: np.ndarray, masks: np.ndarray, scores: np.ndarray, point: tuple[float, float]) -> Image.Image:
    """HxWx3 uint8 image with CxHxW bool masks side by side (one panel per mask), the point marked."""
    panels = []
    for i, (mask, score) in enumerate(zip(masks, scores)):
        tinted = image.astype(np.float32)
        tinted[mask] = 0.45 * tinted[mask] + 0.55 * _COLOURS[i % len(_COLOURS)]
        panel = Image.fromarray(tinted.astype(np.uint8))
        draw = ImageDraw.Draw(panel)
        r = max(4, min(image.shape[:2]) // 80)
        draw.ellipse([point[0] - r, point[1] - r, point[0] + r, point[1] + r], fill=(255, 255, 0), outline=(0, 0, 0))
        draw.text((8, 8), f"mask {i}: predicted IoU {score:.3f}", fill=(255, 255, 255))
        panels.append(panel)
    canvas = Image.new("RGB", (sum(p.width for p in panels), panels[0].height))
    for i, panel in enumerate(panels):
        canvas.paste(panel, (i * panel.width, 0))
    return canvas


def draw_automatic_overlay(image: np.ndarray, records: list[dict]) -> Image.Image:
    """HxWx3 uint8 image beside a copy with every record's mask tinted (largest first, so
    small masks stay visible) and outlined."""
    rng = np.random.default_rng(0)
    tinted = image.astype(np.float32)
    outlines = np.zeros(image.shape[:2], np.uint8)
    for record in sorted(records, key=lambda r: -r["area"]):
        mask = record["mask"]
        tinted[mask] = 0.4 * tinted[mask] + 0.6 * rng.uniform(40, 255, 3)
        edge = mask.astype(np.uint8) - cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
        outlines |= edge
    tinted[outlines > 0] = 255
    return Image.fromarray(np.concatenate([image, tinted.astype(np.uint8)], axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("demo", __doc__)
    parser.add_argument("--image", required=True, type=Path, help="photo to segment (any format PIL reads)")
    parser.add_argument("--output", required=True, type=Path, help="overlay PNG to write")
    add_model_arguments(parser, SHIPPED_OR_GIVEN)
    parser.add_argument("--point", help="x,y of a foreground point in pixels (default: the image centre)")
    parser.add_argument("--automatic", action="store_true", help="draw all automatic masks (official preset)")
    parser.add_argument(
        "--points-per-side", type=int, help="automatic masks: grid points per side (default: the preset's, 32)"
    )
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        help="automatic masks: predicted-IoU filter (default: the preset's, or what suits shipped weights)",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        help="automatic masks: stability filter (default: the preset's, or what suits shipped weights)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    args = parser.parse_args(argv)
    configure_logging()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    try:
        image = np.asarray(Image.open(args.image).convert("RGB"))
    except (OSError, ValueError) as error:
        return input_error(f"cannot read image {args.image}: {error}")
    given = {
        "points_per_side": args.points_per_side,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
    }
    given = {k: v for k, v in given.items() if v is not None}
    try:
        MaskGeneratorSettings.preset("official", **given)
    except ValueError as error:
        parser.error(str(error))
    h, w = image.shape[:2]
    point = (w / 2, h / 2) if args.point is None else tuple(float(v) for v in args.point.split(","))
    if len(point) != 2:
        parser.error(f"--point takes x,y, got {args.point!r}")

    args.checkpoint = checkpoint_or_shipped(args.model, args.checkpoint, stderr_line)
    try:
        model = load_sam(args.model, args.checkpoint).to(device)
    except CheckpointError as error:
        return input_error(str(error))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.automatic:
        start = time.perf_counter()
        overrides = bundled_generator_overrides(args.model) if args.checkpoint == args.model else {}
        overrides.update(given)
        settings = MaskGeneratorSettings.preset("official", **overrides)
        records = MaskGenerator(model, settings).generate(image, with_masks=True)
        draw_automatic_overlay(image, records).save(args.output)
        print(
            f"{args.image.name}: {w}x{h}, {len(records)} automatic masks in {time.perf_counter() - start:.1f}s "
            f"on {device}; wrote {args.output}"
        )
        return 0
    predictor = SamPredictor(model)
    start = time.perf_counter()
    predictor.set_image(image)
    embedded = time.perf_counter()
    result = predictor.predict(np.array([point]), np.array([1]), multimask_output=True)
    done = time.perf_counter()
    draw_overlay(image, result.masks, result.iou_predictions, point).save(args.output)
    print(
        f"{args.image.name}: {w}x{h}, point {point}, "
        f"predicted IoUs {[round(float(s), 3) for s in result.iou_predictions]}, "
        f"mask areas {result.masks.reshape(len(result.masks), -1).sum(1).tolist()} px; "
        f"embed {embedded - start:.2f}s, decode {done - embedded:.3f}s on {device}; wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
