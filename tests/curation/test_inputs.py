import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.inputs import InputError, metadata_schema, plan_inputs


def _touch(folder, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_is_planned_recursively_in_uri_order(tmp_path):
    _touch(tmp_path, ["b.jpg", "a.PNG", "sub/c.jpeg", "notes.txt", "sub/d.webp"])
    plan = plan_inputs(str(tmp_path), first_id=100)
    uris = plan["uri"].to_pylist()
    assert [u.rsplit("/", 1)[1] for u in uris] == ["a.PNG", "b.jpg", "c.jpeg", "d.webp"]
    assert uris == sorted(uris) and all(u.startswith("file://") for u in uris)
    assert plan["image_id"].to_pylist() == [100, 101, 102, 103]
    assert plan_inputs(str(tmp_path), first_id=100).equals(plan)  # same input, same ids
    assert plan_inputs(str(tmp_path / "sub" / "*.jpeg")).num_rows == 1


def test_a_manifest_carries_metadata(tmp_path):
    table = pa.table({"uri": ["s3://b/2.jpg", "s3://b/1.jpg"], "country": ["NZ", None], "lat": [-41.3, 48.8]})
    pq.write_table(table, tmp_path / "inputs.parquet")
    plan = plan_inputs(str(tmp_path / "inputs.parquet"))
    assert plan["uri"].to_pylist() == ["s3://b/1.jpg", "s3://b/2.jpg"]
    assert [json.loads(m) for m in plan["metadata"].to_pylist()] == [{"lat": 48.8}, {"country": "NZ", "lat": -41.3}]
    (tmp_path / "inputs.csv").write_text("uri,country\n/x/a.jpg,FR\n")
    assert json.loads(plan_inputs(str(tmp_path / "inputs.csv"))["metadata"][0].as_py()) == {"country": "FR"}


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("path,country\n/x/a.jpg,FR\n", "no 'uri' column"),
        ("uri,width\n/x/a.jpg,3\n", "reserved"),
        ("uri\n/x/a.jpg\n/x/a.jpg\n", "twice"),
    ],
)
def test_bad_manifests_are_refused(tmp_path, csv, message):
    (tmp_path / "m.csv").write_text(csv)
    with pytest.raises(InputError, match=message):
        plan_inputs(str(tmp_path / "m.csv"))


def test_no_images_is_an_error(tmp_path):
    _touch(tmp_path, ["readme.txt"])
    with pytest.raises(InputError, match="no input images"):
        plan_inputs(str(tmp_path))
    with pytest.raises(InputError, match="cannot read input manifest"):
        plan_inputs(str(tmp_path / "missing.parquet"))


def test_the_metadata_schema_types_each_column_over_the_whole_plan(tmp_path):
    manifest = tmp_path / "inputs.parquet"
    rows = [
        {"uri": "s3://b/1.jpg", "country": "NZ", "lat": 1.0, "n": 3, "ok": True, "code": "7"},
        {"uri": "s3://b/2.jpg", "country": None, "lat": 2.5, "n": 4, "ok": False, "code": "x7"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    assert metadata_schema(plan_inputs(str(manifest))) == pa.schema(
        [("code", pa.string()), ("country", pa.string()), ("lat", pa.float64()), ("n", pa.int64()), ("ok", pa.bool_())]
    )
    mixed = pa.table({"metadata": ['{"v": 1}', '{"v": 2.5}', '{"w": [1]}', "{}", '{"u": 1}', '{"u": "a"}']})
    assert metadata_schema(mixed) == pa.schema([("v", pa.float64()), ("w", pa.string()), ("u", pa.string())])
