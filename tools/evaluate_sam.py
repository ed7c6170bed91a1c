"""Evaluate a SAM on ground-truth masks: a release (e.g. held-out generated scenes) or real photos
with a COCO instances file.

    sa-engine evaluate --release out/scenes/heldout --model sae_tiny --max-images 100
    sa-engine evaluate --coco-annotations ../shared/data/real/coco_train50/instances.json \
        --coco-images ../shared/data/real/coco_train50/images --preset sa1b

Prints and optionally writes (--json) single-point mIoU (top-ranked and best of three, the
latter also by object size, beside the ground truth's own IoU after a round trip through the
model's low-res mask grid) and automatic-mask proposal recall AR@10/100/1000 (COCOeval, segm,
category-agnostic), with the share of proposals that lie on a ground-truth mask (IoU >= 0.5).
See `sam_core.training.evaluation` for the protocol. Proposals use `PROPOSAL_SETTINGS` (the whole
image only, no quality filter) unless `--preset` names one of the job's generator presets, which
then runs as the job runs it: with the shipped model's own thresholds when no --checkpoint is
given; any flag below overrides either, e.g. `--crop-n-layers 1`. With a COCO instances file only
the photos of `--split` are evaluated (default: the validation split of
`curation.coco_instances`, which training never sees); crowd regions are ignored, not objects.
`--image-size N` runs the model at another input side, resampling the position tables of weights
made for the preset's (zero-shot, no training). `--single-point-only` skips the proposals (the
single-point figures take seconds, the job's proposals minutes): the way to compare checkpoints.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from itertools import islice

import numpy as np

from curation.coco_instances import SPLITS, CocoInstancesError, Split, read_coco_instances
from curation.images import decode_image
from curation.record_size import RecordSizeError, conform
from curation.release import iter_release
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import PRESETS, MaskGeneratorSettings
from sam_core.checkpoints import bundled_generator_overrides, load_sam
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.mask_ops import decode_rle
from sam_core.modeling.sam import Sam
from sam_core.predictor import SamPredictor
from sam_core.training.evaluation import (
    PROPOSAL_SETTINGS,
    GroundTruthImage,
    ProposalScores,
    proposal_recall,
    single_point_miou,
)
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


def coco_ground_truth_images(annotations: str, images: str, split: Split, limit: int | None) -> list[GroundTruthImage]:
    """The first `limit` photos of `split` in a COCO instances file, crowd regions as ignore regions."""
    photos = read_coco_instances(annotations, images, split)[:limit]
    if not photos:
        raise CocoInstancesError(f"{annotations} holds no photo of the {split} split")
    return [GroundTruthImage(p.image_id, p.pixels(), p.masks(), p.masks("crowd")) for p in photos]


GENERATOR_FLAGS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "crop_n_layers")


def proposal_settings(args: argparse.Namespace) -> MaskGeneratorSettings:
    """PROPOSAL_SETTINGS, or the named job preset with the shipped thresholds (no --checkpoint), then the flags."""
    if args.preset is None:
        base = PROPOSAL_SETTINGS
    else:
        shipped = bundled_generator_overrides(args.model) if args.checkpoint is None else {}
        base = MaskGeneratorSettings.preset(args.preset, **shipped)
    overrides = {name: getattr(args, name) for name in GENERATOR_FLAGS if getattr(args, name) is not None}
    return replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("evaluate", __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", help="release with ground-truth masks (any fsspec URI)")
    source.add_argument("--coco-annotations", help="a COCO instances file of real photos (needs --coco-images)")
    parser.add_argument("--coco-images", help="the folder its file_names are relative to")
    parser.add_argument(
        "--split", choices=SPLITS, default="validation", help="photos of the instances file to evaluate"
    )
    add_model_arguments(parser, SHIPPED_OR_GIVEN, RESAMPLED)
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="proposals from this job preset, as the job runs it (default: 32x32 grid, whole image, no filter)",
    )
    parser.add_argument("--points-per-side", type=int, default=None, help="proposals: grid points per side")
    parser.add_argument("--pred-iou-thresh", type=float, default=None, help="proposals: predicted-IoU filter")
    parser.add_argument("--stability-score-thresh", type=float, default=None, help="proposals: stability filter")
    parser.add_argument("--crop-n-layers", type=int, default=None, help="proposals: zoomed crop layers")
    parser.add_argument(
        "--single-point-only",
        action="store_true",
        help="single-point figures only, no proposals (seconds, not minutes: for comparing checkpoints)",
    )
    parser.add_argument("--json", default=None, help="also write the results (printed as JSON) to this file")
    args = parser.parse_args(argv)
    configure_logging()
    if (args.coco_annotations is None) != (args.coco_images is None):
        parser.error("--coco-annotations and --coco-images go together")
    if args.single_point_only and (
        args.preset is not None or any(getattr(args, name) is not None for name in GENERATOR_FLAGS)
    ):
        parser.error("--single-point-only makes no proposals: drop --preset and the proposal flags")
    try:
        settings = proposal_settings(args)
        config = model_config(args)
    except ValueError as error:
        parser.error(str(error))

    source = args.release or args.coco_annotations
    try:
        model = load_sam(config, args.checkpoint or args.model, resample_positions=True)
        if args.release is not None:
            images = ground_truth_images(args.release, args.max_images)
        else:
            images = coco_ground_truth_images(args.coco_annotations, args.coco_images, args.split, args.max_images)
    except RecordSizeError as error:
        return input_error(f"{args.release}: {error}")
    except (ValueError, OSError) as error:  # CheckpointError, ReleaseError and CocoInstancesError included
        return input_error(str(error))
    started = time.perf_counter()
    point = single_point_miou(SamPredictor(model), images)
    stderr_line(
        f"single point: mIoU top-ranked {point.miou_top:.3f}, best of three {point.miou_best:.3f} "
        f"over {point.n_masks} masks ({time.perf_counter() - started:.0f} s); best of three by size: "
        + ", ".join(f"{k} {v:.3f} ({point.masks_by_size[k]})" for k, v in point.miou_best_by_size.items())
        + ("" if point.miou_best_medium_large is None else f"; medium and large {point.miou_best_medium_large:.3f}")
    )
    low = model.config.low_res_mask_size
    stderr_line(
        f"the ground truth itself through the {low}x{low} low-res mask grid, by size: "
        + ", ".join(f"{k} {v:.3f}" for k, v in point.round_trip_by_size.items())
    )
    result = {
        "source": source,
        "split": None if args.release else args.split,
        "model": args.model,
        "checkpoint": args.checkpoint or args.model,
        "image_size": config.image_size,
        "single_point": asdict(point),
        "proposals": None if args.single_point_only else asdict(proposal_scores(model, settings, images)),
        "proposal_settings": None if args.single_point_only else asdict(settings),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def proposal_scores(model: Sam, settings: MaskGeneratorSettings, images: list[GroundTruthImage]) -> ProposalScores:
    """Runs the generator over the images and logs its recall line."""
    started = time.perf_counter()
    proposals = proposal_recall(MaskGenerator(model, settings), images)
    stderr_line(
        f"proposals: AR@100 {proposals.ar_100:.3f} ("
        + ", ".join(f"{k} {v:.3f}" for k, v in proposals.ar_100_by_size.items())
        + f"), AR@1000 {proposals.ar_1000:.3f} (small "
        f"{proposals.ar_1000_small:.3f}, medium {proposals.ar_1000_medium:.3f}, large {proposals.ar_1000_large:.3f}), "
        f"{proposals.mean_proposals:.0f} per image, {100 * proposals.precision_50:.1f}% of them on a ground-truth "
        f"mask at IoU >= 0.5 ({time.perf_counter() - started:.0f} s)"
    )
    return proposals


if __name__ == "__main__":
    raise SystemExit(main())
