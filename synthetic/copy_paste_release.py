"""Copy-paste composites of real photos (`synthetic.copy_paste`) written as a release, for training.

    sa-engine copy-paste --output out/real/train --count 2000 --seed 1 \\
        --coco ../shared/data/real/coco_train50/instances.json ../shared/data/real/coco_train50/images \\
        --backgrounds ../shared/data/real/sa1b_samples/images

Cut-outs and annotated backgrounds come from the photos of the training split only
(`curation.coco_instances.is_validation` holds the rest out, whatever file they are in; crowd
regions are never objects); plain backgrounds from the `--backgrounds` folders (every JPEG and
PNG in them) and scikit-image's bundled photos. Composite `i` gets image id `first_id + i`, and its
record's `source` says `copy-paste:<seed>:<i>`; each mask's `pasted` field says whether it is a
pasted cut-out or an object of its background photo. Written in one process, shard by shard.

The sources' licences travel with what is made of them: composites of COCO or SA-1B photos are
for local training and evaluation, never for a published release.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.coco_instances import CocoInstancesError, read_coco_instances
from curation.images import ImageDecodeError, decode_image, fit_long_side, resize_image
from curation.release import ReleaseWriter
from sam_core.command_line import command_parser, input_error
from sam_core.console import configure_logging
from synthetic.copy_paste import AnnotatedPhoto, CopyPasteSettings, cutouts, make_composite
from synthetic.scene_release import ground_truth_record
from synthetic.scenes import TEXTURE_PHOTOS, texture_photos

BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_BACKGROUND_SIDE = 1024
"""Plain backgrounds are held at most this long side (composites are smaller)."""


@dataclass(frozen=True)
class CopyPasteSources:
    annotated: list[AnnotatedPhoto]
    plain: list[np.ndarray]
    described: str
    """What the sources are, for the release's card."""


def load_sources(coco: Sequence[tuple[str, str]], backgrounds: Sequence[str]) -> CopyPasteSources:
    """The training-split photos of each (instances file, images folder) and the plain backgrounds.
    CocoInstancesError for an unusable file, folder or image."""
    annotated, lines = [], []
    for instances, images in coco:
        photos = read_coco_instances(instances, images, "training")
        annotated += [AnnotatedPhoto(p.pixels(), p.masks()) for p in photos if p.objects]
        lines.append(f"- {instances}: {len(photos)} photos of its training split")
    plain = list(texture_photos())
    lines.append(f"- scikit-image's bundled photos ({', '.join(TEXTURE_PHOTOS)}), as plain backgrounds")
    for folder in backgrounds:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in BACKGROUND_SUFFIXES)
        if not paths:
            raise CocoInstancesError(f"{folder}: no JPEG or PNG photos to use as backgrounds")
        for path in paths:
            try:
                photo = decode_image(path.read_bytes())
                plain.append(resize_image(photo, fit_long_side(photo.shape[:2], MAX_BACKGROUND_SIDE)))
            except (OSError, ImageDecodeError) as error:
                raise CocoInstancesError(f"background {path}: {error}") from error
        lines.append(f"- {folder}: {len(paths)} photos, as plain backgrounds")
    if not annotated:
        raise CocoInstancesError("no annotated photo in the training split of the given instances files")
    return CopyPasteSources(annotated, plain, "\n".join(lines))


def composite_card(count: int, seed: int, settings: CopyPasteSettings, sources: str, n_masks: int) -> str:
    fields = "\n".join(f"| {k} | {v} |" for k, v in asdict(settings).items())
    return f"""# Copy-paste composites (seed {seed})

{count} images and {n_masks} ground-truth masks made by `synthetic.copy_paste` (sa-engine): real
object cut-outs pasted with occlusion, scale and colour jitter onto real photos; a share of them are
the annotated photos alone. Masks are the exact visible regions; the cut-outs' outlines are their
source annotations' (COCO polygons are coarse at the edges).

Sources (training splits only):
{sources}

For local training and evaluation: the source photos' licences (COCO's Flickr licences, the SA-1B
research licence) do not allow publishing these images.

| setting | value |
|---|---|
{fields}
"""


def write_copy_paste_release(
    out: str,
    count: int,
    seed: int,
    sources: CopyPasteSources,
    settings: CopyPasteSettings | None = None,
    shard_size: int = 500,
    first_id: int = 0,
) -> dict[str, Any]:
    """Make `count` composites of series `seed` into a release at `out`; returns the manifest."""
    settings = settings or CopyPasteSettings()
    if count < 1 or shard_size < 1:
        raise ValueError(f"count and shard_size must be >= 1, got {count} and {shard_size}")
    pieces = cutouts(sources.annotated, settings.min_cutout_area)
    writer = ReleaseWriter(out)
    shards = []
    for shard, start in enumerate(range(0, count, shard_size)):
        items = []
        for i in range(start, min(start + shard_size, count)):
            composite = make_composite(seed, i, sources.annotated, sources.plain, pieces, settings)
            per_mask = [{"pasted": pasted} for pasted in composite.pasted]
            source = f"copy-paste:{seed}:{i}"
            items.append(ground_truth_record(first_id + i, composite.image, composite.masks, source, per_mask))
            print(f"\rcopy-paste: {i + 1}/{count} composites", end="", file=sys.stderr, flush=True)
        summary = writer.write_shard(shard, items)
        writer.write_failures(summary.name, [])
        shards.append(summary)
    print(file=sys.stderr)
    n_masks = sum(s.n_masks for s in shards)
    record = {"generator": "synthetic.copy_paste", "seed": seed, "first_id": first_id, **asdict(settings)}
    card = composite_card(count, seed, settings, sources.described, n_masks)
    return writer.finish(shards, record, card)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("copy-paste", __doc__)
    parser.add_argument("--output", required=True, help="release prefix: a local folder or any fsspec URI")
    parser.add_argument("--count", type=int, required=True, help="number of composites")
    parser.add_argument("--seed", type=int, required=True, help="series seed; composite i of a seed never changes")
    parser.add_argument(
        "--coco",
        nargs=2,
        action="append",
        required=True,
        metavar=("INSTANCES_JSON", "IMAGES_DIR"),
        help="a COCO instances file and its images folder (repeatable); its training split is used",
    )
    parser.add_argument(
        "--backgrounds", action="append", default=[], help="a folder of photos to paste onto (repeatable)"
    )
    parser.add_argument("--first-id", type=int, default=0, help="image id of composite 0")
    parser.add_argument("--shard-size", type=int, default=500, help="composites per tar shard")
    parser.add_argument("--size", type=int, default=CopyPasteSettings.size, help="longer side of the composites")
    args = parser.parse_args(argv)
    configure_logging()
    if args.count < 1 or args.shard_size < 1:
        parser.error(f"count and shard_size must be >= 1, got {args.count} and {args.shard_size}")
    try:
        settings = CopyPasteSettings(size=args.size)
    except ValueError as error:
        parser.error(str(error))
    try:
        sources = load_sources([tuple(pair) for pair in args.coco], args.backgrounds)
        manifest = write_copy_paste_release(
            args.output, args.count, args.seed, sources, settings, args.shard_size, args.first_id
        )
    except (ValueError, OSError) as error:  # CocoInstancesError and ReleaseError included
        return input_error(str(error))
    print(
        f"{manifest['n_images']} composites, {manifest['n_masks']} masks in {len(manifest['shards'])} shards "
        f"-> {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
