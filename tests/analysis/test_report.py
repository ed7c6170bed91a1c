"""The HTML report end to end: every section from a release with known answers, read locally and
from a moto S3 server on loopback, then opened in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from analysis.audit import export_audit
from analysis.fairness import summarize_groups
from analysis.report import main
from analysis.similar_images import NEIGHBOURS, THUMB_LONG_SIDE
from curation.dedup import decide, signature_from_bytes
from curation.dedup_table import dedup_table_bytes
from curation.embeddings import read_embeddings
from curation.images import MAX_PIXELS, MIN_SIDE, decode_image, encode_jpeg
from curation.semdedup import semdedup
from tests.analysis.conftest import KnownRelease, write_coco
from tests.analysis.embedded_release import near_copy, unit_vectors, write_embedded_release
from tests.analysis.photo_release import COCO_IDS, photo_images
from tests.analysis.test_audit import review_corrections
from tests.analysis.test_neighbours import brute_force_nearest
from tests.browser import check_page, chromium, serve_folder
from tests.ray_cluster import free_port

SECTIONS = ("Overview", "Gallery", "Near-duplicates", "Mask properties", "Geography and income", "Quality audit")
SECTIONS += ("Fairness in segmenting people",)
GONE = "/nonexistent/gone.jpg"


@pytest.fixture(scope="module")
def report(known_release: KnownRelease, fairness_masks_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("report_inputs")
    coco = write_coco(work / "coco.json", known_release, polygons=True)
    audit = export_audit(known_release.uri, work / "audit", n=3, seed=0, progress=False)
    corrected = json.loads(audit.read_text())
    corrected["annotations"] = corrected["annotations"][1:]  # the annotators deleted one mask
    (work / "corrected.json").write_text(json.dumps(corrected))
    groups = summarize_groups(pd.read_csv(fairness_masks_csv), ["GenderPresentation"])
    groups.to_csv(work / "fairness_groups.csv", index=False)
    out = tmp_path_factory.mktemp("report")
    args = ["--release", known_release.uri, "--output", str(out), "--name", "known", "--compare", f"COCO={coco}"]
    args += ["--audit-exported", str(audit), "--audit-corrected", str(work / "corrected.json")]
    args += ["--fairness", str(work / "fairness_groups.csv"), "--concavity-sample", "50"]
    assert main(args) == 0
    return out


def test_report_tables_hold_the_known_answers(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert all(f"<h2>{title}</h2>" in page for title in SECTIONS)
    assert "No keep/drop table given" in page and "Not computed: " in page and "<code>sa-engine embed" in page
    datasets = pd.read_csv(report / "tables" / "datasets.csv").set_index("dataset")
    assert datasets.loc["known", ["images", "masks"]].tolist() == [3, 14]
    assert datasets.loc["COCO", ["images", "masks"]].tolist() == [3, 14]
    bins = pd.read_csv(report / "tables" / "masks_per_image.csv").set_index("masks per image")
    assert bins["known"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])
    # Kenya (ISO code): 2 masks; France (name): 0 masks; São Paulo (lat/lon): 12 masks
    groups = pd.read_csv(report / "tables" / "geography_groups.csv").set_index("group")
    assert groups.loc[["Africa", "Europe", "Latin America & Caribbean", "North America"], "images"].tolist() == [
        1,
        1,
        1,
        0,
    ]
    assert groups.loc[["Africa", "Europe", "Latin America & Caribbean"], "masks"].tolist() == [2, 0, 12]
    assert groups.loc[["High income", "Middle income", "Low income"], "images"].tolist() == [1, 2, 0]
    countries = pd.read_csv(report / "tables" / "geography_countries.csv", keep_default_na=False)
    assert sorted(countries["iso2"]) == ["BR", "FR", "KE"]
    audit = pd.read_csv(report / "tables" / "audit_summary.csv").set_index("masks")
    assert audit.loc["all", "pairs"] == 13 and audit.loc["all", "share_iou_above_0_90"] == 1.0
    assert "From the corrected audit file: 14 exported masks: 13 scored, 1 deleted; 0 added." in page
    fairness = pd.read_csv(report / "tables" / "fairness_groups.csv")
    assert fairness["n_masks"].sum() == 6
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert figures == sorted(
        f"{name}.png"
        for name in ("masks_per_image", "relative_size", "concavity", "center_bias", "scores", "geography_groups")
        + ("top_countries", "audit_ious", "fairness_groups")
    )
    thumbnails = sorted(p.name for p in (report / "gallery").glob("*.jpg"))
    assert thumbnails == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg"]  # every image of the release, drawn
    assert page.count("<img ") == len(figures) + len(thumbnails)


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    with serve_folder(report) as url, chromium() as driver:
        check = check_page(driver, f"{url}/index.html", screenshot)
    assert check.title == "Analysis of known"
    assert check.images == 9 + 3 and check.broken_images == []  # figures and gallery thumbnails
    assert check.console_errors == []
    assert check.tables == len(list((report / "tables").glob("*.csv")))
    assert screenshot.stat().st_size > 50_000  # a page of figures, not a blank one


def test_report_reads_a_release_on_s3(known_release: KnownRelease, report: Path, tmp_path: Path) -> None:
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto",
                     aws_secret_access_key="moto").create_bucket(Bucket="releases")  # fmt: skip
        options = {"key": "moto", "secret": "moto", "client_kwargs": {"endpoint_url": endpoint}}
        s3fs.S3FileSystem(**options).put(known_release.uri + "/", "releases/known/", recursive=True)
        out = tmp_path / "s3_report"
        args = ["--release", "s3://releases/known", "--output", str(out), "--name", "known", "--concavity-sample", "50"]
        assert main([*args, "--storage-options", json.dumps(options)]) == 0
    finally:
        server.stop()

    def table(folder: Path, name: str) -> pd.DataFrame:
        """The release's own rows or column (the local report also compares with a COCO file)."""
        frame = pd.read_csv(folder / "tables" / f"{name}.csv")
        if "dataset" in frame.columns:
            return frame[frame["dataset"] == "known"].reset_index(drop=True)
        return frame[[c for c in frame.columns if c != "COCO"]]

    for name in ("datasets", "masks_per_image", "relative_size", "concavity", "geography_groups"):
        pd.testing.assert_frame_equal(table(out, name), table(report, name))


def test_report_refuses_bad_input(
    known_release: KnownRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(known_release.uri, unfinished)
    (unfinished / "_SUCCESS").unlink()
    assert main(["--release", str(unfinished), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {unfinished} is not a finished release: _SUCCESS is missing\n" in err and "Traceback" not in err
    for bad in (["--compare", "no-equals-sign"], ["--audit-exported", "a.json"], ["--concavity-sample", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--release", known_release.uri, "--output", str(tmp_path / "out"), *bad])
        assert exit_info.value.code == 2


def test_report_logs_each_section_and_its_reading_progress(
    known_release: KnownRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--release", known_release.uri, "--output", str(tmp_path / "out"), "--concavity-sample", "10"]
    assert main(args) == 0
    log = capsys.readouterr().err
    sections = re.findall(r"section (\d+)/(\d+): ([a-z ]+) \(\d+ s so far\)", log)
    assert [int(number) for number, _, _ in sections] == list(range(1, len(sections) + 1))
    assert {int(total) for _, total, _ in sections} == {len(sections)}
    assert {"overview", "mask properties", "fairness"} <= {name for _, _, name in sections}
    # The release's 14 masks come in a batch per index file; the line of the last one is always logged.
    assert re.search(r"release: read 14/14 masks \| [\d.,]+ masks/s \| 0 s left", log), log


def test_report_shows_the_audit_of_a_review_corrections_folder(known_release: KnownRelease, tmp_path: Path) -> None:
    corrections = review_corrections(str(tmp_path / "corrections"), known_release)  # IoUs and times by hand
    out = tmp_path / "report"
    args = ["--release", known_release.uri, "--output", str(out), "--corrections", corrections]
    assert main([*args, "--concavity-sample", "10"]) == 0
    page = (out / "index.html").read_text()
    audit = page[page.index("<h2>Quality audit</h2>") : page.index("<h2>Fairness in segmenting people</h2>")]
    assert f"From the corrections folder {corrections}: 14 automatic masks: 5 scored, 1 rejected, 8 pending" in audit
    summary = pd.read_csv(out / "tables" / "audit_summary.csv").set_index("masks")
    assert summary.loc["all"].tolist() == pytest.approx([5, 2 / 5, 4 / 5, 0.87, 0.8])
    times = pd.read_csv(out / "tables" / "audit_time.csv").set_index("status")
    assert times.loc["edited"].tolist() == pytest.approx([3, 24.0, 8.0, 8.0])

    def drawn(table: str) -> dict[str, list[str]]:
        """Each row of an HTML table of the page: its label and its cells as drawn."""
        rows = re.findall(r"<tr>\s*<th>(\w+)</th>((?:\s*<td>[^<]*</td>)+)\s*</tr>", table)
        return {label: re.findall(r"<td>([^<]*)</td>", cells) for label, cells in rows}

    summary_html, time_html = re.findall(r"<table.*?</table>", audit, re.DOTALL)[:2]
    assert drawn(summary_html)["all"] == ["5", "0.4", "0.8", "0.87", "0.8"]
    assert drawn(summary_html)["small"] == ["3", "0.3333", "0.6667", "0.85", "0.8"]
    assert drawn(time_html)["edited"] == ["3", "24", "8", "8"]
    assert drawn(time_html)["all"] == ["7", "43.5", "6.214", "6"]
    with pytest.raises(SystemExit) as exit_info:  # two audits at once
        main([*args, "--audit-exported", "a.json", "--audit-corrected", "b.json"])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def similar_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, dict[int, str], Path]:
    """A report with both keep/drop tables over a release of six real photos with planted embeddings.

    The records' sources are made unreadable paths, so that a released image's thumbnail can only
    come from its shard; a dropped input not in the release is a real file read from its uri.
    Returns (the report folder, the 7 x D vectors of the semantic table's inputs: the release's six
    by image id, then the gone input's; source by image id, the dropped file)."""
    work = tmp_path_factory.mktemp("similar_inputs")
    images = photo_images(coco_ids=COCO_IDS[:3])  # ids 1..6: three COCO photos, then the shared photos
    sources = {}
    for item in images:
        image = item.record["image"]
        sources[image["image_id"]] = image["source"] = f"/nonexistent/photos/{image['image_id']}.jpg"
    vectors = unit_vectors(len(images), seed=8)
    vectors[1] = near_copy(vectors[0], 0.05, seed=9)  # image 2 is image 1's near copy
    vectors[4] = near_copy(vectors[3], 0.2, seed=10)
    release = write_embedded_release(work / "release", images, vectors)

    photo = decode_image(images[3].image_bytes)  # image 4, and a smaller re-encoded copy the job dropped
    dropped = work / "dropped_small_copy.jpg"
    dropped.write_bytes(encode_jpeg(cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2)), 75))
    uris, data = [sources[4], str(dropped), sources[6]], [images[3].image_bytes, dropped.read_bytes()]
    data.append(images[5].image_bytes)
    signed = [signature_from_bytes(d, MAX_PIXELS, MIN_SIDE) for d in data]
    phash = decide(uris, np.stack([h for h, _ in signed]), np.array([p for _, p in signed]), ["", "", ""])
    assert phash["reason"].to_pylist() == ["kept", "duplicate", "unique"]
    (work / "phash.parquet").write_bytes(dedup_table_bytes(phash, {"max_distance": 9}))
    # SemDeDup over the six images and an input gone since: image 1 (the most pixels, made up) is kept,
    # its near copy image 2 and the gone input are dropped
    stored = read_embeddings(release)
    vectors = stored.vectors[np.argsort(stored.image_ids)]
    semantic_vectors = np.vstack([vectors, near_copy(vectors[0].astype(np.float32), 0.02, seed=11)])
    uris = [*(sources[i] for i in range(1, 7)), GONE]
    semantic, settings = semdedup(uris, np.array([100, 90, 80, 80, 80, 80, 70]), semantic_vectors, 0.95)
    assert semantic["reason"].to_pylist() == ["kept", "duplicate", "unique", "unique", "unique", "unique", "duplicate"]
    (work / "semdedup.parquet").write_bytes(dedup_table_bytes(semantic, settings))

    out = tmp_path_factory.mktemp("similar_report")
    args = ["--release", release, "--output", str(out), "--concavity-sample", "10"]
    args += ["--dedup-table", str(work / "phash.parquet"), "--dedup-table", str(work / "semdedup.parquet")]
    assert main(args) == 0
    return out, semantic_vectors, sources, dropped


def test_report_shows_near_duplicate_groups_of_both_methods(similar_report) -> None:
    out, vectors, sources, dropped = similar_report
    page = (out / "index.html").read_text()
    section = page[page.index("<h2>Near-duplicates</h2>") : page.index("<h2>Mask properties</h2>")]
    phash = pd.read_csv(out / "tables" / "near_duplicates_1.csv")
    assert phash[["kept", "duplicate"]].values.tolist() == [[sources[4], str(dropped)]]
    assert phash["similarity"].tolist() == [f"{phash['distance'][0]}/64 bits apart"]
    semantic = pd.read_csv(out / "tables" / "near_duplicates_2.csv")  # the closest first: the gone input's copy
    assert semantic[["kept", "duplicate"]].values.tolist() == [[sources[1], GONE], [sources[1], sources[2]]]
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    cosines = 1 - semantic["distance"] / 10000
    assert cosines.tolist() == pytest.approx([unit[0] @ unit[6], unit[0] @ unit[1]], abs=1e-4)
    assert semantic["similarity"].tolist() == [f"cosine {c:.4f}" for c in cosines]
    # released images from their shards (their sources do not exist), the dropped copy from its uri
    thumbnails = sorted(p.name for p in (out / "similar").glob("d*.jpg"))
    assert thumbnails == ["d1_0_0.jpg", "d1_0_1.jpg", "d2_0_0.jpg", "d2_0_2.jpg"]  # d2_0_1: the gone input
    small = decode_image(dropped.read_bytes())
    drawn = decode_image((out / "similar" / "d1_0_1.jpg").read_bytes())
    assert max(drawn.shape[:2]) == THUMB_LONG_SIDE
    assert drawn.shape[1] / drawn.shape[0] == pytest.approx(small.shape[1] / small.shape[0], rel=0.02)
    assert "not in the release, and not readable at its uri: FileNotFoundError" in section and GONE in section
    assert "By perceptual hash: " in section and "By embeddings (SemDeDup): " in section
    assert "Inputs dropped as near-duplicates: 1, of 1 kept (pairs within 9 of 64 bits)" in section
    assert "Inputs dropped as near-duplicates: 2, of 1 kept (pairs at cosine &gt;= 0.95)" in section


def test_report_shows_the_nearest_neighbours_of_seeded_images(similar_report) -> None:
    out, vectors, _, _ = similar_report
    vectors = vectors[:6]  # the release's own
    table = pd.read_csv(out / "tables" / "nearest_neighbours.csv")
    ids = np.arange(1, 7)
    assert table["image_id"].nunique() == 4 and len(table) == 4 * NEIGHBOURS  # five others for each image
    for image_id, rows in table.groupby("image_id"):
        expected_ids, expected_cosines = brute_force_nearest(ids, vectors, int(image_id), NEIGHBOURS)
        assert rows.sort_values("rank")["neighbour_id"].tolist() == expected_ids
        assert rows.sort_values("rank")["cosine"].tolist() == pytest.approx(expected_cosines, abs=1e-5)
    assert len(list((out / "similar").glob("n_*.jpg"))) == 4 * (1 + NEIGHBOURS)


def test_report_with_similar_images_renders_in_headless_chromium(similar_report, tmp_path: Path) -> None:
    out = similar_report[0]
    with serve_folder(out) as url, chromium() as driver:
        check = check_page(driver, f"{url}/index.html", tmp_path / "similar.png")
    thumbnails = len(list((out / "similar").glob("*.jpg"))) + len(list((out / "gallery").glob("*.jpg")))
    assert check.images == thumbnails + len(list((out / "figures").glob("*.png"))) and check.broken_images == []
    assert check.console_errors == []
