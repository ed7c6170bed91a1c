import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.inputs import METADATA_SCHEMA_KEY, plan_inputs
from curation.job_plan import PlanMismatchError, SavedPlan, load_or_create_plan
from curation.release import ReleaseWriter


def _manifest(tmp_path) -> str:
    """Five inputs, listed out of order, with a country for some."""
    uris = [f"s3://b/{name}.jpg" for name in "ecabd"]
    pq.write_table(pa.table({"uri": uris, "country": ["NZ", None, "FR", None, "NZ"]}), tmp_path / "inputs.parquet")
    return str(tmp_path / "inputs.parquet")


def test_the_first_plan_is_kept_and_other_settings_are_refused(tmp_path):
    writer = ReleaseWriter(str(tmp_path / "out"))
    manifest = _manifest(tmp_path)
    plan, resumed = load_or_create_plan(
        writer, {"input": "x", "preset": "sa1b"}, lambda f: plan_inputs(manifest, first_id=10).write(f, 2)
    )
    assert not resumed and plan.num_rows == 5 and plan.first_id == 10 and plan.group_starts == (0, 2, 4, 5)
    assert plan.metadata == pa.schema([("country", pa.string())])
    assert plan.uri == f"file://{tmp_path}/out/_plan/inputs.parquet"

    def must_not_list(f):
        raise AssertionError("a resumed job must not list its input again")

    again, resumed = load_or_create_plan(writer, {"preset": "sa1b", "input": "x"}, must_not_list)
    assert resumed and again == plan
    with pytest.raises(PlanMismatchError, match="preset differ"):
        load_or_create_plan(writer, {"input": "x", "preset": "official"}, must_not_list)


def test_rows_are_read_by_id_from_the_row_groups_that_hold_them(tmp_path):
    buffer = io.BytesIO()
    plan_inputs(_manifest(tmp_path), first_id=10).write(buffer, 2)
    (tmp_path / "plan.parquet").write_bytes(buffer.getvalue())
    plan = SavedPlan.open(str(tmp_path / "plan.parquet"))
    rows = plan.rows(np.array([14, 10, 13]), ["uri", "metadata"]).to_pylist()
    assert rows == [
        {"image_id": 14, "uri": "s3://b/e.jpg", "metadata": '{"country": "NZ"}'},
        {"image_id": 10, "uri": "s3://b/a.jpg", "metadata": '{"country": "FR"}'},
        {"image_id": 13, "uri": "s3://b/d.jpg", "metadata": '{"country": "NZ"}'},
    ]
    assert plan.read(["uri"])["uri"].to_pylist() == [f"s3://b/{name}.jpg" for name in "abcde"]


def test_a_plan_written_without_its_metadata_schema_gets_it_from_its_rows(tmp_path):
    """Plans written before the schema was stored with them: one row group, no key-value metadata."""
    buffer = io.BytesIO()
    plan_inputs(_manifest(tmp_path)).write(buffer)
    pq.write_table(pq.read_table(buffer).replace_schema_metadata(None), tmp_path / "old.parquet")
    assert METADATA_SCHEMA_KEY not in (pq.ParquetFile(tmp_path / "old.parquet").metadata.metadata or {})
    plan = SavedPlan.open(str(tmp_path / "old.parquet"))
    assert plan.metadata == pa.schema([("country", pa.string())]) and plan.group_starts == (0, 5)
    assert plan.rows(np.array([3]), ["uri"]).column("uri").to_pylist() == ["s3://b/d.jpg"]


def test_an_output_with_other_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(PlanMismatchError, match="not empty"):
        load_or_create_plan(ReleaseWriter(str(tmp_path / "out")), {"input": "x"}, lambda f: None)
