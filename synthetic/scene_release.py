"""A release of generated scenes (`synthetic.scenes`) in the project's release format.

    sa-engine scenes --output out/scenes/train --seed 1 --count 4000

Scene `i` of a release gets image id `first_id + i`, its masks release-wide annotation ids
(`curation.records.with_annotation_ids`; `parent_id` names the parent's id, -1 for none); shards of `shard_size` scenes are
generated in parallel processes. Ground-truth annotations carry no model scores:
`predicted_iou` and `stability_score` are null, `crop_box` is the whole image, and
`point_coords` holds the mask pixel farthest from its boundary.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from curation.images import encode_jpeg
from curation.records import image_entry, with_annotation_ids
from curation.release import ReleaseImage, ReleaseWriter, ShardSummary
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging
from sam_core.mask_ops import annotation_fields, interior_point
from synthetic.scenes import SceneSettings, generate_scene

JPEG_QUALITY = 92


def ground_truth_record(
    image_id: int, image: np.ndarray, masks: np.ndarray, source: str, per_mask: Sequence[dict[str, Any]]
) -> ReleaseImage:
    """An HxWx3 uint8 image and its NxHxW bool ground-truth masks as a release image with SA-1B
    annotations (no model scores; `per_mask[i]`'s fields added to mask i's annotation)."""
    height, width = image.shape[:2]
    annotations = with_annotation_ids(
        image_id,
        [
            {
                **fields,
                "predicted_iou": None,
                "stability_score": None,
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "point_coords": [list(interior_point(masks[i]))],
                **per_mask[i],
            }
            for i, fields in enumerate(annotation_fields(torch.from_numpy(masks)))
        ],
    )
    record = {"image": image_entry(image_id, (height, width), {"source": source}), "annotations": annotations}
    return ReleaseImage(record, encode_jpeg(image, JPEG_QUALITY))


def scene_record(image_id: int, seed: int, index: int, settings: SceneSettings) -> ReleaseImage:
    """Scene `index` of series `seed` as a release image with SA-1B annotations."""
    scene = generate_scene(seed, index, settings)
    item = ground_truth_record(
        image_id, scene.image, scene.masks, f"scene:{seed}:{index}", [{"kind": kind} for kind in scene.kinds]
    )
    annotations = item.record["annotations"]
    for annotation, parent in zip(annotations, scene.parents, strict=True):
        annotation["parent_id"] = annotations[parent]["id"] if parent >= 0 else -1
    return item


def _write_shard(
    out: str, shard: int, seed: int, indexes: range, first_id: int, settings: SceneSettings
) -> ShardSummary:
    images = [scene_record(first_id + i, seed, i, settings) for i in indexes]
    writer = ReleaseWriter(out)
    summary = writer.write_shard(shard, images)
    writer.write_failures(summary.name, [])  # none: a failures file per shard, as the job's releases have
    return summary


def scene_card(count: int, seed: int, settings: SceneSettings, n_masks: int) -> str:
    fields = "\n".join(f"| {k} | {v} |" for k, v in asdict(settings).items())
    return f"""# Generated scenes (seed {seed})

{count} images and {n_masks} ground-truth masks drawn by `synthetic.scenes` (sa-engine): textured
backgrounds with unannotated clutter, occluding shapes of several kinds and sizes, and composite
objects whose parts and sub-parts are annotated too. Masks are the exact visible regions as painted;
images are stored as JPEG (quality {JPEG_QUALITY}), so pixel values are approximate while masks are exact.

Made for training and evaluating small SAM models; not photographs, so they say nothing about
how a model does on real images.

| scene setting | value |
|---|---|
{fields}
"""


def write_scene_release(
    out: str,
    count: int,
    seed: int,
    shard_size: int = 500,
    first_id: int = 0,
    settings: SceneSettings | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate `count` scenes of series `seed` into a release at `out`; returns the manifest."""
    settings = settings or SceneSettings()
    if count < 1 or shard_size < 1:
        raise ValueError(f"count and shard_size must be >= 1, got {count} and {shard_size}")
    ranges = [range(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]
    writer = ReleaseWriter(out)
    workers = workers or os.cpu_count() or 1
    shards = []
    if workers == 1:
        results = (_write_shard(out, k, seed, r, first_id, settings) for k, r in enumerate(ranges))
        pool = None
    else:
        # spawn, not fork: a forked child of a process that already ran torch can deadlock.
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        futures = [pool.submit(_write_shard, out, k, seed, r, first_id, settings) for k, r in enumerate(ranges)]
        results = (future.result() for future in futures)
    try:
        for done, summary in enumerate(results, 1):
            shards.append(summary)
            print(f"\rscenes: shard {done}/{len(ranges)} written", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    print(file=sys.stderr)
    n_masks = sum(s.n_masks for s in shards)
    settings_record = {"generator": "synthetic.scenes", "seed": seed, "first_id": first_id, **asdict(settings)}
    return writer.finish(shards, settings_record, scene_card(count, seed, settings, n_masks))


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("scenes", __doc__)
    parser.add_argument("--output", required=True, help="release prefix: a local folder or any fsspec URI")
    parser.add_argument("--count", type=int, required=True, help="number of scenes")
    parser.add_argument("--seed", type=int, required=True, help="series seed; scene i of a seed never changes")
    parser.add_argument("--first-id", type=int, default=0, help="image id of scene 0")
    parser.add_argument("--shard-size", type=int, default=500, help="scenes per tar shard")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        manifest = write_scene_release(
            args.output, args.count, args.seed, args.shard_size, args.first_id, workers=args.workers
        )
    except (ValueError, OSError) as error:  # ReleaseError included
        return input_error(str(error))
    print(
        f"{manifest['n_images']} scenes, {manifest['n_masks']} masks in {len(manifest['shards'])} shards -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
