"""The HTML report end to end: every section from a release with known answers, read locally and
from a moto S3 server on loopback, then opened in real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.audit import export_audit
from analysis.fairness import summarize_groups
from analysis.report import main
from tests.analysis.conftest import KnownRelease, write_coco
from tests.analysis.test_audit import review_corrections
from tests.browser import check_page, chromium, serve_folder
from tests.ray_cluster import free_port

SECTIONS = ("Overview", "Gallery", "Mask properties", "Geography and income", "Quality audit")
SECTIONS += ("Fairness in segmenting people",)


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
