"""The keep/drop table of near-duplicate removal as a file: written by `pipelines/dedup.py`, read by
`pipelines/amg.py` (which skips the dropped inputs) and summarised in the dataset card.

One Parquet file (curation.dedup.DEDUP_SCHEMA, one row per input) whose schema metadata holds the
settings it was made with under the key `sa_engine.dedup`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup import DEDUP_SCHEMA
from sam_core.storage_retry import read_bytes

SETTINGS_KEY = b"sa_engine.dedup"


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
    """A keep/drop table as read: the rows, the settings it was made with, its bytes and their sha256."""

    table: pa.Table
    settings: dict[str, Any]
    data: bytes
    sha256: str

    @classmethod
    def read(cls, uri: str, storage_options: dict[str, Any] | None = None) -> DedupTable:
        try:
            data = read_bytes(uri, storage_options)  # retried whole under the storage retry policy
            table = pq.read_table(io.BytesIO(data))
        except (OSError, pa.ArrowException) as error:
            raise DedupTableError(f"cannot read the keep/drop table {uri}: {error}") from error
        missing = sorted(set(DEDUP_SCHEMA.names) - set(table.column_names))
        if missing:
            raise DedupTableError(f"{uri} is not a keep/drop table of pipelines/dedup.py: no columns {missing}")
        settings = json.loads((table.schema.metadata or {}).get(SETTINGS_KEY, b"{}"))
        return cls(table.select(DEDUP_SCHEMA.names), settings, data, hashlib.sha256(data).hexdigest())

    def dropped(self, uris: Sequence[str]) -> dict[str, str]:
        """{uri: reason} for the `uris` this table drops in favour of another of `uris`;
        DedupTableError if it lacks any of them (it was made for other inputs)."""
        listed = set(self.table["uri"].to_pylist())
        absent = [u for u in uris if u not in listed]
        if absent:
            raise DedupTableError(
                f"the keep/drop table lacks {len(absent)} of the {len(uris)} inputs (e.g. {absent[0]}); "
                "make it for this input with pipelines/dedup.py"
            )
        drops = self.table.filter(pc.invert(self.table["keep"])).select(["uri", "matched_uri", "distance"])
        wanted = set(uris)
        return {  # a duplicate whose kept image is not in this input stays: it is then the only copy
            row["uri"]: f"near-duplicate of {row['matched_uri']} (hashes {row['distance']}/64 bits apart)"
            for row in drops.to_pylist()
            if row["uri"] in wanted and row["matched_uri"] in wanted
        }

    def summary(self) -> dict[str, Any]:
        """Counts for the card: inputs checked, by reason, and clusters of near-duplicates."""
        reasons = pc.value_counts(self.table["reason"]).to_pylist()
        by_reason = {r["values"]: r["counts"] for r in reasons}
        return {
            "inputs": self.table.num_rows,
            "unique": by_reason.get("unique", 0),
            "clusters": by_reason.get("kept", 0),
            "dropped": by_reason.get("duplicate", 0),
            "unreadable": by_reason.get("unreadable", 0),
            "settings": self.settings,
            "sha256": self.sha256,
        }
