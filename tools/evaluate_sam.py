"""Evaluate a SAM on a release with ground-truth masks (e.g. held-out generated scenes).

    sa-engine evaluate --release out/scenes/heldout --model sae_tiny --max-images 100

Prints and optionally writes (--json) single-point mIoU (top-ranked and best of three, the
latter also by object size, beside the ground truth's own IoU after a round trip through the
model's low-res mask grid) and automatic-mask proposal recall AR@10/100/1000 (COCOeval, segm,
category-agnostic), with the share of proposals that lie on a ground-truth mask (IoU >= 0.5).
See `sam_core.training.evaluation` for the protocol; proposals use `PROPOSAL_SETTINGS`
(the whole image only) unless overridden, e.g. `--crop-n-layers 1` for zoomed crops as the data
engine's presets run them. `--image-size N` runs the model at another input side, resampling
the position tables of weights made for the preset's (zero-shot, no training).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from itertools import islice

import numpy as np

from curation.images import decode_image
from curation.record_size import RecordSizeError, conform
from curation.release import iter_release
from sam_core.amg.generator import MaskGenerator
from sam_core.checkpoints import load_sam
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.mask_ops import decode_rle
from sam_core.predictor import SamPredictor
from sam_core.training.evaluation import PROPOSAL_SETTINGS, GroundTruthImage, proposal_recall, single_point_miou
from tools.model_flags import RESAMPLED, SHIPPED_OR_GIVEN, add_model_arguments, model_config


def ground_truth_images(release: str, limit: int | None) -> list[GroundTruthImage]:
    """The first `limit` images of a release with their ground-truth masks. A record whose size
    disagrees with its JPEG stops the evaluation with a RecordSizeError naming it: figures over a
    silently smaller or rescaled set would not compare with other evaluations of the release."""
    images = []
    for item in islice(iter_release(release), limit):
        annotations = conform(item).record["annotations"]
        masks = np.stack([decode_rle(a["segmentation"]) for a in annotations]) if annotations else None
        pixels = decode_image(item.image_bytes)
        if masks is None:
            masks = np.zeros((0, *pixels.shape[:2]), bool)
        images.append(GroundTruthImage(int(item.record["image"]["image_id"]), pixels, masks))
    return images


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("evaluate", __doc__)
    parser.add_argument("--release", required=True, help="release with ground-truth masks (any fsspec URI)")
    add_model_arguments(parser, SHIPPED_OR_GIVEN, RESAMPLED)
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument(
        "--points-per-side", type=int, default=PROPOSAL_SETTINGS.points_per_side, help="proposals: grid points per side"
    )
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=PROPOSAL_SETTINGS.pred_iou_thresh,
        help="proposals: predicted-IoU filter",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        default=PROPOSAL_SETTINGS.stability_score_thresh,
        help="proposals: stability filter",
    )
    parser.add_argument(
        "--crop-n-layers",
        type=int,
        default=PROPOSAL_SETTINGS.crop_n_layers,
        help="zoomed crop layers for the proposals, as the data engine runs them",
    )
    parser.add_argument("--json", default=None, help="also write the results (printed as JSON) to this file")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = replace(
            PROPOSAL_SETTINGS,
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            crop_n_layers=args.crop_n_layers,
        )
        config = model_config(args)
    except ValueError as error:
        parser.error(str(error))

    try:
        model = load_sam(config, args.checkpoint or args.model, resample_positions=True)
        images = ground_truth_images(args.release, args.max_images)
    except RecordSizeError as error:
        return input_error(f"{args.release}: {error}")
    except (ValueError, OSError) as error:  # CheckpointError and ReleaseError included
        return input_error(str(error))
    started = time.perf_counter()
    point = single_point_miou(SamPredictor(model), images)
    stderr_line(
        f"single point: mIoU top-ranked {point.miou_top:.3f}, best of three {point.miou_best:.3f} "
        f"over {point.n_masks} masks ({time.perf_counter() - started:.0f} s); best of three by size: "
        + ", ".join(f"{k} {v:.3f} ({point.masks_by_size[k]})" for k, v in point.miou_best_by_size.items())
    )
    low = model.config.low_res_mask_size
    stderr_line(
        f"the ground truth itself through the {low}x{low} low-res mask grid, by size: "
        + ", ".join(f"{k} {v:.3f}" for k, v in point.round_trip_by_size.items())
    )
    started = time.perf_counter()
    proposals = proposal_recall(MaskGenerator(model, settings), images)
    stderr_line(
        f"proposals: AR@100 {proposals.ar_100:.3f}, AR@1000 {proposals.ar_1000:.3f} (small "
        f"{proposals.ar_1000_small:.3f}, medium {proposals.ar_1000_medium:.3f}, large {proposals.ar_1000_large:.3f}), "
        f"{proposals.mean_proposals:.0f} per image, {100 * proposals.precision_50:.1f}% of them on a ground-truth "
        f"mask at IoU >= 0.5 ({time.perf_counter() - started:.0f} s)"
    )
    result = {
        "release": args.release,
        "model": args.model,
        "checkpoint": args.checkpoint or args.model,
        "image_size": config.image_size,
        "single_point": asdict(point),
        "proposals": asdict(proposals),
        "proposal_settings": asdict(settings),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
