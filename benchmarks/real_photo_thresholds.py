"""The job generator's quality thresholds, chosen on the validation split of real photos.

    .venv/bin/python -m benchmarks.real_photo_thresholds --shared ../shared/data --checkpoint sae_tiny

Runs the job's generator (`--preset`, default sa1b, as the job runs it) once over the validation
photos of `coco_train50` (`curation.coco_instances.is_validation`; training never sees them) with
both quality filters at the lowest values of the grid, then, for every (predicted IoU, stability)
pair of the grid, keeps the masks that pass both and scores them: AR@100 and AR@1000 (COCOeval,
category-agnostic, crowd regions ignored), the share of kept masks on an object at IoU >= 0.5,
and masks per image. The pair chosen is the one with the highest harmonic mean of AR@100 and that
share: recall of whole objects against the share of what is kept being one.

Filtering after the generator is close to, not exactly, what the generator does with those
thresholds (its NMS and small-region clean-up saw the masks the filters would have removed): the
table ranks the pairs; measure the chosen pair exactly with `sa-engine evaluate --preset sa1b
--pred-iou-thresh P --stability-score-thresh S`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import PRESETS, MaskGeneratorSettings
from sam_core.checkpoints import load_sam
from sam_core.training.evaluation import ProposalScores, score_proposals
from tools.evaluate_sam import coco_ground_truth_images

PRED_IOU_GRID = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)
STABILITY_GRID = (0.0, 0.4, 0.6, 0.8, 0.9)


def balance(scores: ProposalScores) -> float:
    """Harmonic mean of AR@100 and the share of proposals on an object (0 when either is)."""
    a, b = scores.ar_100, scores.precision_50
    return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared/data", help="the shared data folder (holds real/coco_train50)")
    parser.add_argument("--model", default="sae_tiny")
    parser.add_argument("--checkpoint", default="sae_tiny", help="weights: a path or a shipped model's name")
    parser.add_argument("--preset", default="sa1b", choices=sorted(PRESETS))
    parser.add_argument("--max-images", type=int, default=None, help="the first N validation photos only")
    parser.add_argument("--points-per-side", type=int, default=None, help="grid points (default: the preset's)")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args(argv)

    coco = Path(args.shared) / "real" / "coco_train50"
    images = coco_ground_truth_images(str(coco / "instances.json"), str(coco / "images"), "validation", args.max_images)
    grid = {} if args.points_per_side is None else {"points_per_side": args.points_per_side}
    settings = MaskGeneratorSettings.preset(
        args.preset, pred_iou_thresh=min(PRED_IOU_GRID), stability_score_thresh=min(STABILITY_GRID), **grid
    )
    generator = MaskGenerator(load_sam(args.model, args.checkpoint), settings)
    started, records = time.perf_counter(), []
    for k, image in enumerate(images, 1):
        records.append(generator.generate(image.image))
        print(f"\rgenerator: {k}/{len(images)} photos", end="", file=sys.stderr, flush=True)
    print(f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    rows: list[tuple[float, float, ProposalScores]] = []
    for pred_iou in PRED_IOU_GRID:
        for stability in STABILITY_GRID:
            kept = [
                [r for r in found if r["predicted_iou"] > pred_iou and r["stability_score"] >= stability]
                for found in records
            ]
            rows.append((pred_iou, stability, score_proposals(zip(images, kept))))
    best = max(rows, key=lambda row: balance(row[2]))
    n_objects = sum(len(image.masks) for image in images)
    print(f"\n{args.checkpoint}, preset {args.preset}, {len(images)} validation photos, {n_objects} objects\n")
    print("| predicted IoU > | stability >= | AR@100 | AR@1000 | on an object (IoU >= 0.5) | masks per image |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        pred_iou, stability, scores = row
        mark = " **chosen**" if row is best else ""
        print(
            f"| {pred_iou} | {stability} | {scores.ar_100:.3f} | {scores.ar_1000:.3f} | "
            f"{100 * scores.precision_50:.1f}% | {scores.mean_proposals:.0f}{mark} |"
        )
    if args.json:
        table = [{"pred_iou_thresh": p, "stability_score_thresh": t, **asdict(s)} for p, t, s in rows]
        chosen = {"pred_iou_thresh": best[0], "stability_score_thresh": best[1]}
        Path(args.json).write_text(
            json.dumps({"checkpoint": args.checkpoint, "rows": table, "chosen": chosen}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
