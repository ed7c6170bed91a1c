import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dedup import decide
from curation.dedup_table import DedupTable, DedupTableError, dedup_table_bytes

URIS = ["s3://b/a.jpg", "s3://b/b.jpg", "s3://b/c.jpg", "s3://b/d.jpg"]


def _table() -> pa.Table:
    """b.jpg is a 1-bit near-duplicate of the larger a.jpg; c.jpg is unique; d.jpg unreadable."""
    hashes = np.zeros((4, 8), np.uint8)
    hashes[0] = hashes[1] = [1, 2, 3, 4, 5, 6, 7, 8]
    hashes[1, 0] ^= 1
    hashes[2] = 255
    return decide(URIS, hashes, np.array([400, 100, 100, 0]), ["", "", "", "decode: empty"], 9)


def _plan(uris: list[str]) -> pa.Table:
    """A plan's image_id and uri columns, ids from 10."""
    return pa.table({"image_id": range(10, 10 + len(uris)), "uri": uris})


def _written(tmp_path, table: pa.Table) -> str:
    path = tmp_path / "dedup.parquet"
    path.write_bytes(dedup_table_bytes(table, {"method": "test", "max_distance": 9}))
    return str(path)


def test_read_back_with_settings_checksum_and_counts(tmp_path):
    found = DedupTable.read(_written(tmp_path, _table()))
    assert found.settings == {"method": "test", "max_distance": 9} and len(found.sha256) == 64
    summary = found.summary()
    assert {k: summary[k] for k in ("inputs", "unique", "clusters", "dropped", "unreadable")} == {
        "inputs": 4, "unique": 1, "clusters": 1, "dropped": 1, "unreadable": 1
    }  # fmt: skip
    assert found.dropped(_plan(URIS)).to_pylist() == [
        {"image_id": 11, "error": "near-duplicate of s3://b/a.jpg (hashes 1/64 bits apart)"}
    ]


def test_a_duplicate_whose_kept_image_is_not_in_the_input_stays(tmp_path):
    found = DedupTable.read(_written(tmp_path, _table()))
    assert found.dropped(_plan(URIS[1:])).num_rows == 0


def test_tables_that_do_not_fit_are_refused(tmp_path):
    found = DedupTable.read(_written(tmp_path, _table()))
    with pytest.raises(DedupTableError, match="lacks 1 of the 5 inputs"):
        found.dropped(_plan([*URIS, "s3://b/new.jpg"]))
    pq.write_table(pa.table({"uri": URIS}), tmp_path / "other.parquet")
    with pytest.raises(DedupTableError, match="not a keep/drop table"):
        DedupTable.read(str(tmp_path / "other.parquet"))
    with pytest.raises(DedupTableError, match="cannot read the keep/drop table"):
        DedupTable.read(str(tmp_path / "missing.parquet"))
    with pytest.raises(ValueError, match="needs the schema"):
        dedup_table_bytes(pa.table({"uri": URIS}), {})
