"""Parquet indexes for a folder of SA-1B tars, so that every analysis reads SA-1B (Meta's download,
or any tars of SA-1B records) the way it reads one of our releases.

    python -m analysis.sa1b_index --tars s3://bucket/sa1b/ --out out/sa1b_index

Writes the release layout without copying any image: index/images/<tar>.parquet and
index/masks/<tar>.parquet for each tar (curation.release's columns), a commit marker per tar,
then manifest.json (each tar's size and sha256, and `shards_uri`, the folder of the tars, in its
settings) and _SUCCESS last. A rerun resumes: tars with a marker are not read again.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any

from curation.release import PROGRESS, ReleaseError, ReleaseWriter, ShardSummary, iter_shard, shard_uris
from sam_core.console import stderr_line

_TAR_STEM = re.compile(r"[A-Za-z0-9_.-]+")
CARD = """# SA-1B index

Parquet indexes of the SA-1B tars in `{tars}`, written by `python -m analysis.sa1b_index` for the
analyses of sa-engine. The images and masks stay in the tars; this folder holds {n_images} image rows
and {n_masks} mask rows from {n_tars} tars.
"""


def index_tars(
    tars: str,
    out: str,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = stderr_line,
) -> dict[str, Any]:
    """Index every *.tar under `tars` into `out`; returns the manifest. `storage_options` serve both."""
    writer = ReleaseWriter(out, storage_options)
    if writer.is_finished():
        raise ReleaseError(f"{out} is already a finished index; remove it to index again")
    uris = shard_uris(tars, storage_options)
    done = {PurePosixPath(p).stem: p for p in writer.fs.glob(writer.path(PROGRESS, "*.json"))}
    shards = []
    for k, uri in enumerate(uris, 1):
        name = PurePosixPath(uri).stem
        if not _TAR_STEM.fullmatch(name):
            raise ReleaseError(f"{uri}: a tar name must be letters, digits, '_', '.' or '-' to name its index files")
        if name in done:
            shards.append(ShardSummary(**json.loads(writer.fs.cat_file(done[name]))))
            continue
        checksum: list[tuple[int, str]] = []
        records = [item.record for item in iter_shard(uri, storage_options, checksum)]
        writer.write_index(name, records)
        ((size, sha256),) = checksum
        summary = ShardSummary(name, len(records), sum(len(r["annotations"]) for r in records), size, sha256)
        writer.write_bytes((PROGRESS, f"{name}.json"), json.dumps(asdict(summary)).encode())
        shards.append(summary)
        if progress:
            progress(f"sa1b_index: {k}/{len(uris)} tars, {sum(s.n_images for s in shards):,} images")
    settings = {"indexed_by": "analysis.sa1b_index", "shards_uri": tars.rstrip("/")}
    n_images, n_masks = sum(s.n_images for s in shards), sum(s.n_masks for s in shards)
    card = CARD.format(tars=tars, n_images=n_images, n_masks=n_masks, n_tars=len(shards))
    return writer.finish(shards, settings, card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.sa1b_index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tars", required=True, help="folder (any fsspec URI) holding the SA-1B *.tar files")
    parser.add_argument("--out", required=True, help="where the index goes (then: analysis.report --release OUT)")
    parser.add_argument("--storage-options", type=json.loads, default={}, help="JSON given to fsspec")
    args = parser.parse_args(argv)
    try:
        manifest = index_tars(args.tars, args.out, args.storage_options)
    except (ReleaseError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stderr_line(f"sa1b_index: {manifest['n_images']:,} images, {manifest['n_masks']:,} masks -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
