"""The keep/drop table of near-duplicate removal as a file: written by `pipelines/dedup.py` (perceptual
hash) or `pipelines/semdedup.py` (embeddings), read by `pipelines/amg.py` (which skips the inputs any of
its tables drops) and summarised in the dataset card.

One Parquet file (curation.dedup.DEDUP_SCHEMA, one row per input) whose schema metadata holds the
settings it was made with under the key `sa_engine.dedup`, among them its "method": "phash" or
"semdedup" (tables written before semdedup existed have a description there: they are phash).
A phash table covers every input it was made for; a semdedup table covers the images of a release,
so an input it lacks (one that failed in that release) is not refused: no table drops it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup import DEDUP_SCHEMA, SEMANTIC_DISTANCE_SCALE
from sam_core.storage_retry import read_bytes

SETTINGS_KEY = b"sa_engine.dedup"
USED_COLUMNS = ["uri", "keep", "reason", "matched_uri", "distance"]
"""The columns a job reads of a keep/drop table (the others are for people and the report)."""


class DedupTableError(ValueError):
    """A keep/drop table that cannot be used for this input; the message says what to do."""


def dedup_table_bytes(table: pa.Table, settings: dict[str, Any]) -> bytes:
    """The Parquet bytes of a keep/drop `table`, with the `settings` it was made with."""
    if not table.schema.equals(DEDUP_SCHEMA):
        raise ValueError(f"a keep/drop table needs the schema {DEDUP_SCHEMA}, got {table.schema}")
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({SETTINGS_KEY: json.dumps(settings).encode()}), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class DedupTable:
    """A keep/drop table as read: its rows (USED_COLUMNS), the settings it was made with, its bytes
    and their sha256."""

    table: pa.Table
    settings: dict[str, Any]
    data: bytes
    sha256: str

    @property
    def method(self) -> str:
        """ "semdedup" or "phash" (the only other method, whatever an older table's settings say)."""
        return "semdedup" if self.settings.get("method") == "semdedup" else "phash"

    @classmethod
    def read(cls, uri: str, storage_options: dict[str, Any] | None = None) -> DedupTable:
        try:
            data = read_bytes(uri, storage_options)  # retried whole under the storage retry policy
            schema = pq.read_schema(io.BytesIO(data))
            missing = sorted(set(DEDUP_SCHEMA.names) - set(schema.names))
            if missing:
                raise DedupTableError(f"{uri} is not a keep/drop table of pipelines/dedup.py: no columns {missing}")
            table = pq.read_table(io.BytesIO(data), columns=USED_COLUMNS)
        except (OSError, pa.ArrowException) as error:
            raise DedupTableError(f"cannot read the keep/drop table {uri}: {error}") from error
        settings = json.loads((schema.metadata or {}).get(SETTINGS_KEY, b"{}"))
        return cls(table, settings, data, hashlib.sha256(data).hexdigest())

    def dropped(self, plan: pa.Table) -> pa.Table:
        """The inputs of `plan` (image_id, uri) that this table drops in favour of another input of
        `plan`, as (image_id, error), in `plan`'s order; DedupTableError if a phash table lacks any of
        them (it was made for other inputs). Computed with Arrow over whole columns: no row becomes Python."""
        at = pc.index_in(plan["uri"], value_set=self.table["uri"])  # each input's row in the table
        absent = pc.sum(pc.is_null(at)).as_py()
        if absent and self.method == "phash":
            example = plan["uri"].filter(pc.is_null(at))[0]
            raise DedupTableError(
                f"the keep/drop table lacks {absent} of the {plan.num_rows} inputs (e.g. {example}); "
                "make it for this input with pipelines/dedup.py"
            )
        dropping = pc.fill_null(pc.invert(self.table["keep"]).take(at), False)
        candidates = plan.select(["image_id"]).filter(dropping)
        matched = self.table.select(["matched_uri", "distance"]).take(at.filter(dropping))
        # a duplicate whose kept image is not in this input stays: it is then the only copy
        present = plan["uri"].filter(pc.is_in(plan["uri"], value_set=pc.unique(matched["matched_uri"])))
        if self.method == "semdedup":
            apart = (
                "embeddings at cosine distance ",
                pc.cast(pc.divide(matched["distance"], float(SEMANTIC_DISTANCE_SCALE)), pa.string()),
            )
        else:
            apart = ("hashes ", pc.cast(matched["distance"], pa.string()), "/64 bits apart")
        error = pc.binary_join_element_wise("near-duplicate of ", matched["matched_uri"], " (", *apart, ")", "")
        return candidates.append_column("error", error).filter(pc.is_in(matched["matched_uri"], value_set=present))

    def summary(self) -> dict[str, Any]:
        """Counts for the card: the method, inputs checked, by reason, and clusters of near-duplicates."""
        reasons = pc.value_counts(self.table["reason"]).to_pylist()
        by_reason = {r["values"]: r["counts"] for r in reasons}
        return {
            "method": self.method,
            "inputs": self.table.num_rows,
            "unique": by_reason.get("unique", 0),
            "clusters": by_reason.get("kept", 0),
            "dropped": by_reason.get("duplicate", 0),
            "unreadable": by_reason.get("unreadable", 0),
            "settings": self.settings,
            "sha256": self.sha256,
        }


NO_DROPS = pa.table({"image_id": pa.array([], pa.int64()), "error": pa.array([], pa.string())})
"""What `DedupTable.dropped` returns when nothing is dropped."""


def dropped_by_any(tables: Sequence[DedupTable], plan: pa.Table) -> pa.Table:
    """The inputs of `plan` (image_id, uri) that any of `tables` drops, as (image_id, error), each once
    (the reason of the first table that drops it), by increasing image_id.

    Both methods keep the same image of a group (the most pixels, then the smallest uri), so every
    table drops an image only for one ranked above it: the merged drops never remove all of a group
    (the highest-ranked image of any chain of drops is dropped by none).
    """
    merged = pa.concat_tables([NO_DROPS, *(table.dropped(plan) for table in tables)])
    _, first = np.unique(merged["image_id"].to_numpy(), return_index=True)  # sorted ids, first table's row
    return merged.take(first)
