"""Parquet indexes for a folder of SA-1B tars, so that every analysis reads SA-1B (Meta's download,
or any tars of SA-1B records) the way it reads one of our releases.

    sa-engine sa1b-index --tars s3://bucket/sa1b/ --output out/sa1b_index

Writes the release layout without copying any image: index/images/<tar>.parquet and
index/masks/<tar>.parquet for each tar (curation.release's columns), a commit marker per tar,
then manifest.json (each tar's size and sha256, and `shards_uri`, the folder of the tars, in its
settings) and _SUCCESS last. A rerun resumes: tars with a marker are not read again.

An image whose record disagrees with its JPEG on the image's size (the record's width/height or a
mask's size; `curation.record_size`), or whose JPEG header does not read, is not indexed: it is a
row of failures/<tar>.parquet naming the image and both sizes, and the rest of its tar is indexed.
Records are indexed as the tars hold them, never rescaled: the analyses read the masks from the
index while the audit export reads them from the tars, and the two must agree.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any

from curation.images import ImageDecodeError
from curation.record_size import RecordSizeError, conform
from curation.release import PROGRESS, ReleaseError, ReleaseWriter, ShardSummary, iter_shard, shard_uris
from sam_core.command_line import add_storage_options, command_parser, input_error
from sam_core.console import configure_logging, stderr_line

_TAR_STEM = re.compile(r"[A-Za-z0-9_.-]+")
CARD = """# SA-1B index

Parquet indexes of the SA-1B tars in `{tars}`, written by `python -m analysis.sa1b_index` for the
analyses of sa-engine. The images and masks stay in the tars; this folder holds {n_images} image rows
and {n_masks} mask rows from {n_tars} tars. {n_failed} images are not indexed: their rows in
`failures/` say why (a record whose size disagrees with its image, or an image header that does not read).
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
        records, failures = _checked_records(uri, storage_options, checksum)
        writer.write_index(name, records)
        if failures:
            writer.write_failures(name, failures)
        ((size, sha256),) = checksum
        summary = ShardSummary(name, len(records), sum(len(r["annotations"]) for r in records), size, sha256)
        writer.write_bytes((PROGRESS, f"{name}.json"), json.dumps(asdict(summary)).encode())
        shards.append(summary)
        if progress:
            progress(f"sa1b_index: {k}/{len(uris)} tars, {sum(s.n_images for s in shards):,} images")
    settings = {"indexed_by": "analysis.sa1b_index", "shards_uri": tars.rstrip("/")}
    n_images, n_masks = sum(s.n_images for s in shards), sum(s.n_masks for s in shards)
    failed = writer.failure_counts()
    card = CARD.format(tars=tars, n_images=n_images, n_masks=n_masks, n_tars=len(shards), n_failed=sum(failed.values()))
    return writer.finish(shards, settings, card, {"failures": failed}, failures_by_stage=failed)


def _checked_records(
    uri: str, storage_options: dict[str, Any] | None, checksum: list[tuple[int, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of one tar whose sizes agree with their images, and a failure row (FAILURE_SCHEMA)
    for each of the others; (bytes, sha256) of the tar is appended to `checksum`."""
    records, failures = [], []
    for item in iter_shard(uri, storage_options, checksum):
        image_id = item.record["image"]["image_id"]
        try:
            records.append(conform(item).record)
        except RecordSizeError as error:  # its message names the image and every size
            failures.append({"image_id": image_id, "uri": uri, "stage": "record_size", "error": str(error)})
        except ImageDecodeError as error:
            failures.append(
                {"image_id": image_id, "uri": uri, "stage": "image_header", "error": f"image {image_id}: {error}"}
            )
    return records, failures


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("sa1b-index", __doc__.split("\n\n")[0])
    parser.add_argument("--tars", required=True, help="folder (any fsspec URI) holding the SA-1B *.tar files")
    parser.add_argument(
        "--output", required=True, help="where the index goes (then: sa-engine report --release OUTPUT)"
    )
    add_storage_options(parser)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        manifest = index_tars(args.tars, args.output, args.storage_options)
    except (ReleaseError, OSError) as error:
        return input_error(str(error))
    failed = sum(manifest["summary"]["failures"].values())
    stderr_line(
        f"sa1b_index: {manifest['n_images']:,} images, {manifest['n_masks']:,} masks -> {args.output}"
        + (f"; {failed:,} images not indexed (see failures/)" if failed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
