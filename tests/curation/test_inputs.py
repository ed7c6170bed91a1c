import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.images import decode_image
from curation.inputs import InputError, InputFailure, metadata_schema, plan_inputs, read_input
from tests.image_zoo import photo_files, write_files


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


def _names(plan: pa.Table, folder) -> list[str]:
    return [u.removeprefix(f"file://{folder}/") for u in plan["uri"].to_pylist()]


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
    plan = plan_inputs(str(photos))
    in_album = sorted(f"album/{f.name}" for f in files)
    assert _names(plan, photos) == [*in_album, "gone.jpg", "one.jpg"]
    outcomes = dict(zip(_names(plan, photos), map(_outcome, plan["uri"].to_pylist())))
    assert outcomes.pop("gone.jpg") == "read" and all(o.startswith("(") for o in outcomes.values()), outcomes
    assert outcomes["one.jpg"] == outcomes[f"album/{files[0].name}"]  # the same photo through both links
    assert _names(plan_inputs(str(photos / "*.jpg")), photos) == ["gone.jpg", "one.jpg"]


def test_what_counts_as_an_input_in_a_folder(tmp_path):
    names = ["a b.JPG", "x.PNG", "deep/er/z.jpeg", "Ünïcode dir/été photo.JPEG", "日本/写真.jpg"]
    skipped = [".DS_Store", "._a b.JPG", ".thumbs/x.jpg", "deep/.cache/y.png", "notes.txt", "raw.CR2"]
    for name in names + skipped:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    plan = plan_inputs(str(tmp_path))
    assert _names(plan, tmp_path) == sorted(names)
    uris = plan["uri"].to_pylist()
    assert [read_input(u, {}, bytes.decode) for u in uris] == sorted(names)  # URIs round-trip exactly
    pq.write_table(pa.table({"uri": uris[::-1]}), tmp_path / "inputs.parquet")
    assert plan_inputs(str(tmp_path / "inputs.parquet"))["uri"].to_pylist() == uris  # and through a manifest


def test_manifest_rows_that_cannot_be_used(tmp_path):
    present = tmp_path / "here é.jpg"
    present.write_bytes(b"x")
    missing = str(tmp_path / "missing.jpg")
    pq.write_table(pa.table({"uri": [missing, str(present)]}), tmp_path / "inputs.parquet")
    assert plan_inputs(str(tmp_path / "inputs.parquet"))["uri"].to_pylist() == [str(present), missing]
    assert read_input(str(present), {}, bytes) == b"x"
    with pytest.raises(InputFailure) as failure:
        read_input(missing, {}, bytes)
    assert failure.value.stage == "read"
    pq.write_table(pa.table({"uri": [str(present), None, ""]}), tmp_path / "holes.parquet")
    with pytest.raises(InputError, match=r"holes.parquet: rows \[1, 2\] .*have no uri"):
        plan_inputs(str(tmp_path / "holes.parquet"))
