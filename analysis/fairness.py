"""Fairness in segmenting people: mIoU per perceived group with bootstrap confidence intervals.

The SAM paper (Kirillov et al. 2023, section 6, Table 2) segments each person of MIAP (More
Inclusive Annotations for People) from 1 and from 3 simulated clicks (`analysis.interactive`)
and reports the mIoU of every perceived gender presentation and age group with a 95% confidence
interval. Any attribute column can be grouped on, not only those two.

    sa-engine fairness --miap-boxes boxes.csv --masks masks.csv --images DIR --mask-dir DIR \\
        --output results/ [--model sae_tiny | --model vit_h --checkpoint PATH] \\
        [--group GenderPresentation --group AgePresentation] [--points 3] [--seed 0] [--limit N]

writes `fairness_masks.csv` (one row per person mask: image_id, mask_index, the attributes,
iou_1..iou_n; re-aggregate it with `summarize_groups`) and `fairness_groups.csv` (one row per
attribute and group: n_masks, miou_k, miou_k_low, miou_k_high for k = 1 and n). By default the
project's small model `sae_tiny` runs with its shipped weights; a published architecture
(vit_b, vit_l, vit_h) loads --checkpoint (a path or fsspec URL), else fetches its official file.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby

import fsspec
import numpy as np
import pandas as pd

from analysis.interactive import PersonSample, simulate
from analysis.miap import iter_person_samples, match_boxes_to_masks, read_miap_boxes, read_segmentation_masks
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging
from sam_core.predictor import SamPredictor

DEFAULT_GROUPS = ("GenderPresentation", "AgePresentation")
_BOOTSTRAP_CELLS = 1 << 22  # resamples x values drawn at once: bounds the memory of one bootstrap chunk


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of 1-D `values` and its percentile-bootstrap confidence interval.

    Each of `n_resamples` resamples draws len(values) values with replacement; low and high are
    the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resample means. The same
    seed gives the same interval.
    """
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n = values.size
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    means = np.concatenate(
        [
            values[rng.integers(0, n, size=(min(chunk, n_resamples - start), n))].mean(axis=1)
            for start in range(0, n_resamples, chunk)
        ]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(values.mean()), float(low), float(high)


def _sample_rng(seed: int, image_id: str, mask_index: int) -> np.random.Generator:
    """A generator that depends on the mask only, not on which other masks are evaluated with it."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), mask_index])


def per_mask_ious(
    samples: Iterable[PersonSample], predictor: SamPredictor, n_points: int = 3, seed: int = 0
) -> pd.DataFrame:
    """One row per sample: image_id, mask_index (the sample's rank among its image's masks),
    its attributes (one column each) and iou_1..iou_<n_points>, the IoU after each click.

    Each image is embedded once for each run of consecutive samples that share its image_id.
    The first click of a mask is drawn from a generator seeded by (seed, image_id, mask_index).
    """
    rows = []
    seen: Counter[str] = Counter()
    for image_id, group in groupby(samples, key=lambda s: s.image_id):
        group = list(group)
        predictor.set_image(group[0].image)
        for sample in group:
            mask_index = seen[image_id]
            seen[image_id] += 1
            if sample.mask.shape != sample.image.shape[:2]:
                raise ValueError(
                    f"image {image_id}: mask {mask_index} is {sample.mask.shape} but the image is {sample.image.shape[:2]}"
                )
            try:
                ious = simulate(predictor, sample.mask, n_points, _sample_rng(seed, image_id, mask_index))
            except ValueError as error:
                raise ValueError(f"image {image_id}, mask {mask_index}: {error}") from error
            rows.append(
                {
                    "image_id": image_id,
                    "mask_index": mask_index,
                    **dict(sample.attributes),
                    **{f"iou_{k}": iou for k, iou in enumerate(ious, start=1)},
                }
            )
    if not rows:
        return pd.DataFrame(columns=["image_id", "mask_index", *(f"iou_{k}" for k in range(1, n_points + 1))])
    return pd.DataFrame(rows)


def summarize_groups(
    table: pd.DataFrame,
    group_columns: Sequence[str],
    points: Sequence[int] = (1, 3),
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (attribute, group value) of a `per_mask_ious` table (or its CSV read back).

    Columns: attribute, group, n_masks, and for each k in `points` miou_k with its bootstrap
    interval miou_k_low, miou_k_high. A missing attribute value forms its own group ("nan").
    """
    missing = [c for c in group_columns if c not in table.columns]
    absent = [f"iou_{k}" for k in points if f"iou_{k}" not in table.columns]
    if missing or absent:
        raise ValueError(f"the per-mask table lacks columns: {missing + absent}")
    rows = []
    for attribute in group_columns:
        groups = table[attribute].astype("string").fillna("nan")
        for value in sorted(groups.unique()):
            selected = table[groups == value]
            row = {"attribute": attribute, "group": value, "n_masks": len(selected)}
            for k in points:
                mean, low, high = bootstrap_ci(selected[f"iou_{k}"].to_numpy(), n_resamples, confidence, seed)
                row.update({f"miou_{k}": mean, f"miou_{k}_low": low, f"miou_{k}_high": high})
            rows.append(row)
    columns = ["attribute", "group", "n_masks"]
    columns += [f"miou_{k}{suffix}" for k in points for suffix in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=columns)


def _points(n_points: int) -> tuple[int, ...]:
    return tuple(sorted({1, n_points}))


def evaluate_groups(
    samples: Iterable[PersonSample],
    predictor: SamPredictor,
    group_columns: Sequence[str],
    n_points: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """`summarize_groups` of `per_mask_ious`: mIoU after 1 and after `n_points` clicks per group."""
    table = per_mask_ious(samples, predictor, n_points, seed)
    return summarize_groups(table, group_columns, _points(n_points), seed=seed)


def _with_progress(samples: Iterator[PersonSample], n_images: int, n_masks: int) -> Iterator[PersonSample]:
    """Pass samples through, reporting each new image on stderr."""
    started, images, previous = time.perf_counter(), 0, None
    for done, sample in enumerate(samples):
        if sample.image_id != previous:
            images, previous = images + 1, sample.image_id
            elapsed = time.perf_counter() - started
            print(
                f"image {images}/{n_images} ({sample.image_id}), mask {done + 1}/{n_masks}, {elapsed:.0f} s",
                file=sys.stderr,
            )
        yield sample


def main(argv: list[str] | None = None) -> int:
    from sam_core.checkpoints import CheckpointError, load_sam
    from sam_core.modeling.registry import MODEL_PRESETS

    parser = command_parser("fairness", __doc__)
    parser.add_argument("--miap-boxes", required=True, action="append", help="MIAP box CSV (repeat for several)")
    parser.add_argument(
        "--masks", required=True, action="append", help="Open Images segmentation CSV (repeat for several)"
    )
    parser.add_argument("--images", required=True, help="folder (any fsspec URI) of <ImageID>.jpg")
    parser.add_argument("--mask-dir", required=True, help="folder (any fsspec URI) holding the CSVs' MaskPath PNGs")
    parser.add_argument("--output", required=True, help="folder (any fsspec URI) for the two CSVs")
    parser.add_argument("--model", default="sae_tiny", choices=sorted(MODEL_PRESETS), help="architecture")
    parser.add_argument(
        "--checkpoint", default=None, help="weights: a path, URL or model name (default: the model's shipped weights)"
    )
    parser.add_argument(
        "--group", action="append", help=f"attribute column to group on, repeat for several (default: {DEFAULT_GROUPS})"
    )
    parser.add_argument("--points", type=int, default=3, help="clicks per mask")
    parser.add_argument("--seed", type=int, default=0, help="seeds the first clicks and the bootstrap")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the masks of the first N images only")
    parser.add_argument("--margin", type=float, default=0.01, help="box-matching tolerance, normalised")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    args = parser.parse_args(argv)
    configure_logging()
    if args.points < 1:
        parser.error(f"--points must be >= 1, got {args.points}")
    groups = args.group or list(DEFAULT_GROUPS)

    try:
        boxes = pd.concat([read_miap_boxes(path) for path in args.miap_boxes], ignore_index=True)
        masks = pd.concat([read_segmentation_masks(path) for path in args.masks], ignore_index=True)
    except (OSError, ValueError) as error:
        return input_error(str(error))
    matched, summary = match_boxes_to_masks(boxes, masks, args.margin)
    print(f"matching: {summary}", file=sys.stderr)
    if args.limit is not None:
        keep = matched["ImageID"].drop_duplicates().iloc[: args.limit]
        matched = matched[matched["ImageID"].isin(keep)]
    if matched.empty:
        return input_error("no MIAP box matches a mask: nothing to evaluate")
    missing = [g for g in groups if g not in matched.columns]
    if missing:
        return input_error(f"--group columns absent from the MIAP boxes: {missing}")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_sam(args.model, args.checkpoint or args.model).to(device)
    except CheckpointError as error:
        return input_error(str(error))
    samples = iter_person_samples(matched, args.images, args.mask_dir, groups)
    progress = _with_progress(samples, matched["ImageID"].nunique(), len(matched))
    table = per_mask_ious(progress, SamPredictor(model), args.points, args.seed)
    summary_table = summarize_groups(table, groups, _points(args.points), args.resamples, args.confidence, args.seed)

    fs, root = fsspec.core.url_to_fs(args.output)
    fs.makedirs(root, exist_ok=True)
    for name, frame in (("fairness_masks.csv", table), ("fairness_groups.csv", summary_table)):
        with fs.open(f"{root.rstrip('/')}/{name}", "w") as f:
            frame.to_csv(f, index=False)
    print(summary_table.to_string(index=False), file=sys.stderr)
    print(f"wrote fairness_groups.csv and fairness_masks.csv ({len(table)} masks) to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
