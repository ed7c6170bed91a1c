import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.images import decode_image
from curation.inputs import (
    METADATA_SCHEMA_KEY,
    PLAN_SCHEMA,
    InputError,
    InputFailure,
    MetadataColumns,
    plan_inputs,
    plan_metadata_schema,
    read_input,
)
from tests.image_zoo import photo_files, write_files


def _planned(uri: str, rows: int = 2, **kwargs) -> pq.ParquetFile:
    """The plan of `uri` as written, in row groups of `rows` inputs."""
    buffer = io.BytesIO()
    plan_inputs(uri, **kwargs).write(buffer, rows)
    return pq.ParquetFile(io.BytesIO(buffer.getvalue()))


def _plan(uri: str, **kwargs) -> pa.Table:
    return _planned(uri, **kwargs).read()


def _touch(folder, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_is_planned_recursively_in_uri_order(tmp_path):
    _touch(tmp_path, ["b.jpg", "a.PNG", "sub/c.jpeg", "notes.txt", "sub/d.webp"])
    written = _planned(str(tmp_path), first_id=100)
    plan = written.read()
    assert plan.schema == PLAN_SCHEMA and [written.metadata.row_group(i).num_rows for i in (0, 1)] == [2, 2]
    uris = plan["uri"].to_pylist()
    assert [u.rsplit("/", 1)[1] for u in uris] == ["a.PNG", "b.jpg", "c.jpeg", "d.webp"]
    assert uris == sorted(uris) and all(u.startswith("file://") for u in uris)
    assert plan["image_id"].to_pylist() == [100, 101, 102, 103] and set(plan["metadata"].to_pylist()) == {"{}"}
    assert _plan(str(tmp_path), first_id=100).equals(plan)  # same input, same ids
    assert plan_inputs(str(tmp_path / "sub" / "*.jpeg")).num_rows == 1


def test_a_manifest_carries_metadata(tmp_path):
    table = pa.table({"uri": ["s3://b/2.jpg", "s3://b/1.jpg"], "country": ["NZ", None], "lat": [-41.3, 48.8]})
    pq.write_table(table, tmp_path / "inputs.parquet")
    plan = _plan(str(tmp_path / "inputs.parquet"), rows=1)
    assert plan["uri"].to_pylist() == ["s3://b/1.jpg", "s3://b/2.jpg"]
    assert [json.loads(m) for m in plan["metadata"].to_pylist()] == [{"lat": 48.8}, {"country": "NZ", "lat": -41.3}]
    (tmp_path / "inputs.csv").write_text("uri,country\n/x/a.jpg,FR\n")
    assert json.loads(_plan(str(tmp_path / "inputs.csv"))["metadata"][0].as_py()) == {"country": "FR"}


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("path,country\n/x/a.jpg,FR\n", "no 'uri' column"),
        ("uri,width\n/x/a.jpg,3\n", "reserved"),
        ("uri\n/x/a.jpg\n/x/a.jpg\n", "twice"),
        ("uri\n/x/c\n/x/b\n/x/a\n/x/c\n/x/b\n/x/b\n/x/c\n", r"lists 2 URIs twice, e.g. \['/x/b', '/x/c'\]"),
        ("uri,country\n/x/a.jpg,FR\n,NZ\n/x/b.jpg,NZ\n,FR\n", r"rows \[1, 3\] .*have no uri"),
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
    columns = {
        "uri": ["s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg"],
        "country": ["NZ", None, "FR"],
        "lat": [1.0, 2.5, None],
        "n": [3, 4, None],
        "ok": [True, False, None],
        "code": ["7", "x7", None],
        "late": [None, None, 1],  # first in the second row group
    }
    pq.write_table(pa.table(columns), manifest)
    written = _planned(str(manifest))
    expected = [("code", pa.string()), ("country", pa.string()), ("lat", pa.float64()), ("n", pa.int64())]
    expected = pa.schema([*expected, ("ok", pa.bool_()), ("late", pa.int64())])
    assert plan_metadata_schema(written) == expected and METADATA_SCHEMA_KEY in written.metadata.metadata
    from_json = MetadataColumns()  # a plan written without its schema: the same, from its JSON
    from_json.add_json(written.read()["metadata"].to_pylist())
    assert from_json.schema() == expected
    mixed = MetadataColumns()
    mixed.add_json(['{"v": 1}', '{"v": 2.5}', '{"w": [1]}', "{}", '{"u": 1}', '{"u": "a"}'])
    assert mixed.schema() == pa.schema([("v", pa.float64()), ("w", pa.string()), ("u", pa.string())])


def _names(uri: str, folder) -> list[str]:
    return [u.removeprefix(f"file://{folder}/") for u in plan_inputs(uri).uris().to_pylist()]


def _outcome(uri: str) -> str:
    """What reading and decoding the input at `uri` gives: its image's shape, or the failed stage."""
    try:
        return str(read_input(uri, {}, decode_image).shape)
    except InputFailure as failure:
        return failure.stage


def test_symbolic_links_count_as_what_they_point_to(tmp_path, shared_image_paths):
    library, photos = tmp_path / "library", tmp_path / "photos"
    files = write_files(library, photo_files(shared_image_paths[:1]))  # the first photo, astronaut, coffee
    (photos / "sub").mkdir(parents=True)
    (photos / "one.jpg").symlink_to(files[0])
    (photos / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")  # dangling: an input that fails to read
    (photos / "album").symlink_to(library, target_is_directory=True)  # followed
    (photos / "sub" / "loop").symlink_to(photos, target_is_directory=True)  # a cycle: not followed
    (photos / "sub" / "again").symlink_to(library, target_is_directory=True)  # listed already, as album/
    in_album = sorted(f"album/{f.name}" for f in files)
    assert _names(str(photos), photos) == [*in_album, "gone.jpg", "one.jpg"]
    uris = plan_inputs(str(photos)).uris().to_pylist()
    outcomes = dict(zip(_names(str(photos), photos), map(_outcome, uris)))
    assert outcomes.pop("gone.jpg") == "read" and all(o.startswith("(") for o in outcomes.values()), outcomes
    assert outcomes["one.jpg"] == outcomes[f"album/{files[0].name}"]  # the same photo through both links
    assert _names(str(photos / "*.jpg"), photos) == ["gone.jpg", "one.jpg"]


def test_what_counts_as_an_input_in_a_folder(tmp_path):
    names = ["a b.JPG", "x.PNG", "deep/er/z.jpeg", "Ünïcode dir/été photo.JPEG", "日本/写真.jpg"]
    skipped = [".DS_Store", "._a b.JPG", ".thumbs/x.jpg", "deep/.cache/y.png", "notes.txt", "raw.CR2"]
    for name in names + skipped:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    assert _names(str(tmp_path), tmp_path) == sorted(names)
    uris = _plan(str(tmp_path))["uri"].to_pylist()
    assert [read_input(u, {}, bytes.decode) for u in uris] == sorted(names)  # URIs round-trip exactly
    pq.write_table(pa.table({"uri": uris[::-1]}), tmp_path / "inputs.parquet")
    assert _plan(str(tmp_path / "inputs.parquet"))["uri"].to_pylist() == uris  # and through a manifest


def test_manifest_rows_that_cannot_be_used(tmp_path):
    present = tmp_path / "here é.jpg"
    present.write_bytes(b"x")
    missing = str(tmp_path / "missing.jpg")
    pq.write_table(pa.table({"uri": [missing, str(present)]}), tmp_path / "inputs.parquet")
    assert plan_inputs(str(tmp_path / "inputs.parquet")).uris().to_pylist() == [str(present), missing]
    assert read_input(str(present), {}, bytes) == b"x"
    with pytest.raises(InputFailure) as failure:
        read_input(missing, {}, bytes)
    assert failure.value.stage == "read"
    pq.write_table(pa.table({"uri": [str(present), None, ""]}), tmp_path / "holes.parquet")
    with pytest.raises(InputError, match=r"holes.parquet: rows \[1, 2\] .*have no uri"):
        plan_inputs(str(tmp_path / "holes.parquet"))
