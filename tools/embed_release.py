"""Image embeddings for a release made before the job stored them, written under another prefix.

    sa-engine embed --release out/release --output out/release-embeddings
    sa-engine embed --release s3://bucket/release --output s3://bucket/embeddings --device cuda

For each shard of the release, its images (the released JPEGs) are embedded by the model's image
encoder at the model's input size and pooled as the job pools them (`sam_core.pooled_embedding`),
and written as `<output>/embeddings/<shard>.parquet` (`curation.embeddings`), each file whole.
A shard whose file exists is skipped, so a run that stopped resumes where it was; the files
already there must be of the same model and checkpoint. At the end `<output>/embeddings.json`
(the embeddings' info, the release and the counts) and `<output>/_SUCCESS`. Readers then take
the output as the release's embeddings: `read_embeddings(release, embeddings=output)`,
`sa-engine semdedup --embeddings`. One line per shard on stderr; no Ray. Memory holds one
encoder batch of decoded images (`--batch-size`) and one shard's vectors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from curation.embeddings import (
    EMBEDDINGS_DIR,
    METADATA_KEY,
    EmbeddingsError,
    embedding_info,
    embeddings_table,
)
from curation.images import ImageDecodeError, decode_image
from curation.release import SUCCESS, ReleaseError, iter_shard, read_manifest
from curation.retrying_fs import RetryingFileSystem
from sam_core.checkpoints import CheckpointError, checkpoint_or_shipped, fetch_checkpoint, file_sha256, load_sam
from sam_core.command_line import add_storage_options, command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.modeling.sam import Sam
from sam_core.pace import Pace
from sam_core.pooled_embedding import POOLING, embed_images, embedding_dim
from tools.model_flags import SHIPPED_OR_GIVEN, add_model_arguments

INFO_FILE = "embeddings.json"
"""The info of a finished output, beside its `embeddings/` folder."""


class EmbedError(ValueError):
    """A release or an output that the command cannot work with; the message says why."""


def embed_release(
    release: str,
    output: str,
    model: Sam,
    info: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Write the embeddings of every shard of `release` under `output` (see the module's
    docstring) with `model`, recorded with `info` (`curation.embeddings.embedding_info`); returns
    what `<output>/embeddings.json` holds."""
    options = storage_options or {}
    shards = [entry["name"] for entry in read_manifest(release, options)["shards"]]
    source = RetryingFileSystem(release, options)
    target = RetryingFileSystem(output, options)
    root = target.root.rstrip("/")
    target.makedirs(f"{root}/{EMBEDDINGS_DIR}", exist_ok=True)
    pace = Pace(len(shards), "shards")
    n_images = n_skipped = 0
    for done, name in enumerate(shards, 1):
        path = f"{root}/{EMBEDDINGS_DIR}/{name}.parquet"
        if target.exists(path):
            n_images += _check_existing(target, path, info)
            n_skipped += 1
            stderr_line(f"shard {name}: already written, skipped | {pace.describe(done)}")
            continue
        uri = source.unstrip_protocol(f"{source.root.rstrip('/')}/shards/{name}.tar")
        ids, vectors, pending = [], [], []  # decoded images wait only for their encoder batch
        for item in iter_shard(uri, options):
            ids.append(int(item.record["image"]["image_id"]))
            pending.append(_decoded(uri, item.image_bytes))
            if len(pending) == batch_size:
                vectors.append(embed_images(model, pending, batch_size))
                pending = []
        vectors.append(embed_images(model, pending, batch_size))
        table = embeddings_table(np.array(ids, np.int64), np.concatenate(vectors), info)
        with target.open(path, "wb") as f, pq.ParquetWriter(f, table.schema) as parquet:
            parquet.write_table(table)
        n_images += len(ids)
        stderr_line(f"shard {name}: {len(ids)} images embedded | {pace.describe(done)}")
    summary = {**info, "release": release, "n_shards": len(shards), "n_images": n_images, "skipped": n_skipped}
    target.pipe_file(f"{root}/{INFO_FILE}", json.dumps(summary, indent=2).encode())
    target.pipe_file(f"{root}/{SUCCESS}", b"")
    return summary


def _decoded(shard: str, data: bytes) -> np.ndarray:
    try:
        return decode_image(data)
    except ImageDecodeError as error:
        raise EmbedError(f"shard {shard}: an image does not decode: {error}") from error


def _check_existing(fs: RetryingFileSystem, path: str, info: dict[str, Any]) -> int:
    """The rows of the embeddings file at `path`; EmbedError if it was made with another info."""
    with fs.open_ranged(path) as f:
        metadata = pq.ParquetFile(f)
        found = json.loads((metadata.schema_arrow.metadata or {}).get(METADATA_KEY, b"{}"))
        rows = metadata.metadata.num_rows
    if found != info:
        name = PurePosixPath(path).name
        raise EmbedError(
            f"{EMBEDDINGS_DIR}/{name} in the output was made with {found}, not {info}: "
            "give another --output, or the model and checkpoint it was made with"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("embed", __doc__)
    parser.add_argument("--release", required=True, help="a finished release (local folder or fsspec URI)")
    parser.add_argument("--output", required=True, help="where embeddings/<shard>.parquet go (any fsspec URI)")
    add_model_arguments(parser, SHIPPED_OR_GIVEN)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the image encoder runs")
    parser.add_argument("--batch-size", type=int, default=4, help="images per encoder batch")
    add_storage_options(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    configure_logging()
    try:
        read_manifest(args.release, args.storage_options)  # a release that is not there fails before the model loads
        checkpoint = checkpoint_or_shipped(args.model, args.checkpoint, stderr_line)
        sha256 = file_sha256(fetch_checkpoint(checkpoint)) if checkpoint is not None else ""
        model = load_sam(args.model, checkpoint).to(args.device)
        info = embedding_info(args.model, sha256, POOLING, embedding_dim(model.config))
        summary = embed_release(args.release, args.output, model, info, args.storage_options, args.batch_size)
    except (EmbedError, EmbeddingsError, ReleaseError, CheckpointError, OSError) as error:
        return input_error(str(error))
    stderr_line(f"done: {summary['n_images']} images in {summary['n_shards']} shards -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
