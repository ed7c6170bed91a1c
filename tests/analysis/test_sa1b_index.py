"""Indexing a folder of SA-1B tars: the analyses then read it as they read a release."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.audit import export_audit
from analysis.mask_properties import summarize_release
from analysis.release_index import ReleaseIndex
from analysis.sa1b_index import index_tars, main
from curation.release import ReleaseError, ReleaseImage
from tests.analysis.conftest import KnownRelease
from tests.sa1b_real import real_record, real_sa1b_item, with_width, write_sa1b_tar


def test_index_of_tars_reads_like_the_release(known_release: KnownRelease, tmp_path: Path) -> None:
    tars = Path(known_release.uri) / "shards"  # our shards are SA-1B tars: sa_<id>.jpg + sa_<id>.json
    manifest = index_tars(str(tars), str(tmp_path / "index"), progress=None)
    original = json.loads((Path(known_release.uri) / "manifest.json").read_text())
    assert manifest["shards"] == original["shards"]  # the same counts, sizes and sha256 of each tar
    assert manifest["settings"]["shards_uri"] == str(tars)

    ours = summarize_release(ReleaseIndex(str(tmp_path / "index")), "x", 100, progress=None)
    theirs = summarize_release(ReleaseIndex(known_release.uri), "x", 100, progress=None)
    assert ours.masks_per_image.tolist() == theirs.masks_per_image.tolist()
    assert ours.relative_size.counts.tolist() == theirs.relative_size.counts.tolist()
    assert ours.centers.counts.tolist() == theirs.centers.counts.tolist()

    audit = json.loads(
        export_audit(str(tmp_path / "index"), tmp_path / "audit", n=3, seed=0, progress=False).read_text()
    )
    assert len(audit["images"]) == 3 and len(audit["annotations"]) == 14  # images read from the tars' own folder


def test_index_resumes_and_refuses_to_redo_a_finished_one(known_release: KnownRelease, tmp_path: Path) -> None:
    tars, out = str(Path(known_release.uri) / "shards"), tmp_path / "index"
    index_tars(tars, str(out), progress=None)
    with pytest.raises(ReleaseError, match="already a finished index"):
        index_tars(tars, str(out), progress=None)
    # a crash after the first tar: its files and marker stay, the second tar's marker is gone
    for name in ("_SUCCESS", "manifest.json", "_progress/sa_000001.json"):
        (out / name).unlink()
    kept = (out / "index" / "masks" / "sa_000000.parquet").stat().st_mtime_ns
    messages: list[str] = []
    manifest = index_tars(tars, str(out), progress=messages.append)
    assert messages == ["sa1b_index: 2/2 tars, 3 images"]  # only the second tar was read
    assert (out / "index" / "masks" / "sa_000000.parquet").stat().st_mtime_ns == kept
    assert (manifest["n_images"], manifest["n_masks"]) == (3, 14)


def test_unsafe_tar_is_refused(tmp_path: Path) -> None:
    tars = tmp_path / "tars"
    tars.mkdir()
    with tarfile.open(tars / "sa_000000.tar", "w") as tar:
        data = b"{}"
        info = tarfile.TarInfo("../sa_1.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ReleaseError, match="refusing member"):
        index_tars(str(tars), str(tmp_path / "index"), progress=None)
    assert main(["--tars", str(tmp_path / "empty"), "--output", str(tmp_path / "index2")]) == 2


def test_a_record_whose_width_disagrees_with_its_jpeg_is_a_failure_row(tmp_path: Path) -> None:
    good, bad = real_sa1b_item(0, n_masks=5), with_width(real_sa1b_item(1, n_masks=3), 1800)
    not_an_image = ReleaseImage(real_record(226383, n_masks=1), b"not a JPEG")
    write_sa1b_tar(tmp_path / "tars" / "sa_000020.tar", [bad, good, not_an_image])
    manifest = index_tars(str(tmp_path / "tars"), str(tmp_path / "index"), progress=None)

    assert (manifest["n_images"], manifest["n_masks"]) == (1, 5)  # the rest of the tar is indexed
    assert manifest["summary"]["failures"] == {"image_header": 1, "record_size": 1}
    failure, unreadable = pq.read_table(tmp_path / "index" / "failures" / "sa_000020.parquet").to_pylist()
    assert unreadable["image_id"] == 226383 and unreadable["error"].startswith(
        "image 226383: cannot read the image header"
    )
    assert failure["image_id"] == 226382 and failure["stage"] == "record_size"
    assert failure["error"] == "image 226382: its record says 1800x1500 (width x height), but its image is 2000x1500"
    images = pq.read_table(tmp_path / "index" / "index" / "images" / "sa_000020.parquet").to_pylist()
    assert [(row["image_id"], row["width"], row["height"]) for row in images] == [(226381, 2000, 1500)]
    assert "2 images are not indexed" in (tmp_path / "index" / "DATASET_CARD.md").read_text()
