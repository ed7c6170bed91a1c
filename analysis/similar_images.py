"""The report's similar images as thumbnails: example groups of a near-duplicate keep/drop table,
and the nearest neighbours of a few seeded images of a release with embeddings.

An input of a keep/drop table is found in the release by the images index's `source` column (the
uri the job read it from; the first image id when several images share one) and its thumbnail is
made from the released JPEG, reading only the shards that hold shown images, each once. An input
the release does not hold (a duplicate the job dropped, or a release without `source`) is read
from its uri with the report's storage options; one that cannot be read or decoded is shown as
its name and the reason, without a thumbnail. A fixed number of images is shown whatever the
size of the table or the release: EXAMPLE_GROUPS groups of at most SHOWN_DUPLICATES duplicates
per table, NEIGHBOUR_QUERIES images with NEIGHBOURS neighbours each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.audit import index_rows, release_items, sample_images
from analysis.neighbours import DuplicateGroups, NeighbourIndex
from analysis.release_index import ReleaseIndex
from curation.images import ImageDecodeError, decode_image, encode_jpeg, fit_long_side, resize_image
from curation.records import image_file_name
from sam_core.storage_retry import read_bytes

THUMB_LONG_SIDE = 160
THUMB_QUALITY = 80
EXAMPLE_GROUPS = 6
"""Groups shown per keep/drop table: its largest."""
SHOWN_DUPLICATES = 5
"""Duplicates shown per group: the closest to the kept image."""
NEIGHBOUR_QUERIES = 4
NEIGHBOURS = 5


@dataclass(frozen=True)
class Thumb:
    """One image of a row: `label` says its part ("kept", "cosine 0.9731"), `name` what it is
    (sa_<id>.jpg, or an input's uri); `file` is its thumbnail in the folder, None with `note`
    saying why there is none."""

    label: str
    name: str
    file: str | None
    width: int = 0
    height: int = 0
    note: str = ""


@dataclass(frozen=True)
class ThumbRow:
    """A kept image and its duplicates, or a query image and its nearest neighbours."""

    title: str
    thumbs: list[Thumb]


def clear_thumbnails(folder: Path) -> None:
    """Create `folder`, removing the thumbnails of an earlier report."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()


def _thumb(folder: Path, file: str, label: str, name: str, data: bytes | None, note: str = "") -> Thumb:
    """The thumbnail of the encoded image `data` written to `folder`/`file` (long side at most
    THUMB_LONG_SIDE); without it when `data` is None (`note` says why) or does not decode."""
    if data is None:
        return Thumb(label, name, None, note=note)
    try:
        pixels = decode_image(data, draft_side=THUMB_LONG_SIDE)
    except ImageDecodeError as error:
        return Thumb(label, name, None, note=str(error))
    small = resize_image(pixels, fit_long_side(pixels.shape[:2], THUMB_LONG_SIDE))
    (folder / file).write_bytes(encode_jpeg(small, THUMB_QUALITY))
    return Thumb(label, name, file, small.shape[1], small.shape[0])


def _released(index: ReleaseIndex, rows: list[dict[str, Any]]) -> dict[int, bytes]:
    """image id -> released JPEG of the images-index `rows` (image_id, width, height, shard)."""
    return {image_id: item.image_bytes for image_id, item in release_items(index, rows)}


def _released_sources(index: ReleaseIndex, uris: set[str]) -> dict[str, bytes]:
    """uri -> the released JPEG of the image whose `source` is that uri, for those the release holds."""
    wanted = pa.array(sorted(uris), pa.string())
    first: dict[str, dict[str, Any]] = {}
    for batch in index.iter_images(["image_id", "width", "height", "shard", "source"]):
        sources = batch["source"].cast(pa.string())  # all null in an index file without sources
        for row in batch.filter(pc.is_in(sources, value_set=wanted)).to_pylist():
            if row["source"] not in first or row["image_id"] < first[row["source"]]["image_id"]:
                first[row["source"]] = row
    jpegs = _released(index, list(first.values()))
    return {uri: jpegs[row["image_id"]] for uri, row in first.items()}


def _source(uri: str, storage_options: dict[str, Any]) -> tuple[bytes | None, str]:
    """The input at `uri` read from where it lives: (its bytes, "") or (None, why it cannot be read)."""
    try:
        return read_bytes(uri, storage_options), ""
    except (OSError, ValueError) as error:
        return None, f"not in the release, and not readable at its uri: {type(error).__name__}: {error}"


def duplicate_rows(
    index: ReleaseIndex, found: DuplicateGroups, folder: Path, prefix: str, storage_options: dict[str, Any]
) -> list[ThumbRow]:
    """A row per group of `found` (up to EXAMPLE_GROUPS): the kept input, then up to
    SHOWN_DUPLICATES of its duplicates with their distance in words; thumbnails `prefix`_<g>_<m>.jpg."""
    groups = found.groups[:EXAMPLE_GROUPS]
    uris = {uri for group in groups for uri in (group.kept, *(d for d, _ in group.duplicates[:SHOWN_DUPLICATES]))}
    released = _released_sources(index, uris)
    rows = []
    for g, group in enumerate(groups):
        shown = [("kept", group.kept), *((found.similarity(d), uri) for uri, d in group.duplicates[:SHOWN_DUPLICATES])]
        thumbs = []
        for m, (label, uri) in enumerate(shown):
            data, note = (released[uri], "") if uri in released else _source(uri, storage_options)
            thumbs.append(_thumb(folder, f"{prefix}_{g}_{m}.jpg", label, uri, data, note))
        more = len(group.duplicates) - (len(shown) - 1)
        title = f"{len(group.duplicates)} duplicate{'s' * (len(group.duplicates) != 1)} of {group.kept}"
        rows.append(ThumbRow(title + (f" ({more} more not shown)" if more else ""), thumbs))
    return rows


def duplicate_table(found: DuplicateGroups, rows: Iterable[ThumbRow]) -> pd.DataFrame:
    """The shown pairs: kept uri, duplicate uri, the table's distance and it in words."""
    distances = {(group.kept, uri): d for group in found.groups for uri, d in group.duplicates}
    records = [
        {"kept": row.thumbs[0].name, "duplicate": thumb.name, "distance": distances[row.thumbs[0].name, thumb.name]}
        for row in rows
        for thumb in row.thumbs[1:]
    ]
    frame = pd.DataFrame(records, columns=["kept", "duplicate", "distance"])
    return frame.assign(similarity=[found.similarity(d) for d in frame["distance"]])


def neighbour_rows(
    index: ReleaseIndex, neighbours: NeighbourIndex, folder: Path, seed: int
) -> tuple[list[ThumbRow], pd.DataFrame]:
    """A row per seeded image (NEIGHBOUR_QUERIES of them, `analysis.audit.sample_images`): the
    image, then its NEIGHBOURS nearest by cosine; and the table of (image_id, rank, neighbour_id,
    cosine). Thumbnails n_<q>_<rank>.jpg, rank 0 the query."""
    queries = sample_images(index, NEIGHBOUR_QUERIES, seed)
    found = {image_id: neighbours.nearest(image_id, NEIGHBOURS) for image_id in queries}
    ids = set(queries) | {n for near in found.values() for n, _ in near}
    jpegs = _released(index, index_rows(index, ids))
    rows, records = [], []
    for q, image_id in enumerate(queries):
        shown = [("image", image_id), *((f"cosine {cosine:.4f}", n) for n, cosine in found[image_id])]
        thumbs = [
            _thumb(folder, f"n_{q}_{rank}.jpg", label, image_file_name(shown_id), jpegs[shown_id])
            for rank, (label, shown_id) in enumerate(shown)
        ]
        rows.append(ThumbRow(f"{image_file_name(image_id)} and its {len(found[image_id])} nearest", thumbs))
        records += [
            {"image_id": image_id, "rank": rank, "neighbour_id": n, "cosine": cosine}
            for rank, (n, cosine) in enumerate(found[image_id], 1)
        ]
    return rows, pd.DataFrame(records, columns=["image_id", "rank", "neighbour_id", "cosine"])
