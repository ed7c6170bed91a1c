"""The check that a finished release of a local folder holds every planned input exactly once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from curation.embeddings import read_embeddings
from curation.release import iter_release


def accounted_ids(out: Path) -> list[int]:
    """Image ids of every released image and every failure, in one list (duplicates kept)."""
    released = [r.record["image"]["image_id"] for r in iter_release(str(out))]
    failed = pq.read_table(out / "failures").column("image_id").to_pylist() if (out / "failures").exists() else []
    return sorted(released + failed)


def check_exactly_once(out: Path, n_inputs: int) -> None:
    """`out` released all of `n_inputs` inputs, each once, with no shard file that its manifest
    does not list (no leftover of a dead run), every tar's checksum right, and one embedding per
    released image, in its shard's embeddings file."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert accounted_ids(out) == list(range(n_inputs))
    assert manifest["n_images"] == n_inputs and manifest["summary"]["n_inputs"] == n_inputs
    listed = {s["name"] for s in manifest["shards"]}
    assert {t.stem for t in (out / "shards").glob("*.tar")} == listed  # no leftover of the dead run
    assert {p.stem for p in (out / "index" / "images").glob("*.parquet")} == listed
    for shard in manifest["shards"]:
        assert hashlib.sha256((out / "shards" / f"{shard['name']}.tar").read_bytes()).hexdigest() == shard["sha256"]
    assert pq.read_table(out / "index" / "images").num_rows == n_inputs
    assert {p.stem for p in (out / "embeddings").glob("*.parquet")} == listed
    assert sorted(read_embeddings(str(out)).image_ids.tolist()) == list(range(n_inputs))
