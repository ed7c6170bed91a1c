"""The report's gallery on a release of real photos with real masks and real de-identification:
the extremes it picks, what it draws, its size, its section of the report and the page in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from selenium.webdriver.common.by import By

from analysis.accumulators import seeded_hash
from analysis.gallery import FILL_ALPHA, THUMB_LONG_SIDE, choose_images, draw_tile, mask_colour, write_gallery
from analysis.release_index import ReleaseIndex
from analysis.report import FAILURE_ROWS, ReportRequest, build_report
from curation.release import ReleaseImage, ReleaseWriter
from tests.analysis.conftest import KnownRelease, rectangle
from tests.analysis.photo_release import PhotoRelease, failure_rows, photo_images, write_photo_release
from tests.browser import check_page, chromium, serve_folder

MAX_THUMB_BYTES = 40_000
"""A 320 px thumbnail at JPEG quality 80 stays well under this (the photos' run about 14-31 kB)."""


@pytest.fixture(scope="module")
def images() -> list[ReleaseImage]:
    return photo_images()


@pytest.fixture(scope="module")
def photos(images: list[ReleaseImage], tmp_path_factory: pytest.TempPathFactory) -> PhotoRelease:
    return write_photo_release(tmp_path_factory.mktemp("photos"), images, failure_rows(FAILURE_ROWS + 10))


@pytest.fixture(scope="module")
def report(photos: PhotoRelease, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("photo_report")
    build_report(ReportRequest(release=photos.uri, out=out, name="photos", concavity_sample=50))
    return out


def test_the_extremes_and_the_seeded_sample_are_the_true_ones(photos: PhotoRelease) -> None:
    records = photos.records
    masks = [(a["predicted_iou"], a["area"], i, a["id"]) for i, r in records.items() for a in r["annotations"]]
    most = max(records, key=lambda i: (len(records[i]["annotations"]), -i))
    lowest = min(masks)
    largest = max(masks, key=lambda m: (m[1], -m[2], -m[3]))
    for seed in (0, 1):
        picks = choose_images(ReleaseIndex(photos.uri), n_sample=3, seed=seed)
        reasons = {
            reason.split(":")[0]: (pick.image_id, reason, pick.highlight) for pick in picks for reason in pick.reasons
        }
        assert reasons["most masks"][:2] == (most, f"most masks: {len(records[most]['annotations'])}")
        image_id, text, highlight = reasons["lowest predicted IoU"]
        assert image_id == lowest[2] and f"{lowest[0]:.3f}" in text and lowest[3] in highlight
        image_id, text, highlight = reasons["largest mask"]
        assert image_id == largest[2] and f"{largest[1]:,} px" in text and largest[3] in highlight
        ids = np.array(sorted(records), np.int64)
        expected = sorted(ids[np.argsort(seeded_hash(ids, seed))[:3]].tolist())
        assert sorted(p.image_id for p in picks if "seeded sample" in p.reasons) == expected
        assert len({p.image_id for p in picks}) == len(picks)  # an image picked twice is drawn once
        assert [p.image_id for p in picks][:1] == [most]
        for pick in picks:  # shards of 4 images, in id order
            assert pick.shard == f"sa_{(pick.image_id - 1) // 4:06d}"


def test_a_tile_colours_the_mask_outlines_the_blurred_box_and_highlights(known_release: KnownRelease) -> None:
    height, width = 240, 320  # the thumbnail's own size: no scaling
    mask = rectangle(height, width, 40, 60, 100, 100)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    annotation = {
        "id": 7,
        "area": int(mask.sum()),
        "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
    }
    gray = np.full((height, width, 3), 128, np.uint8)
    region = {"kind": "face", "bbox": [200, 60, 80, 60]}
    tile = draw_tile(gray, (height, width), [annotation], [region])

    colour = np.asarray(mask_colour(0))
    assert tile.shape == (height, width, 3)
    assert np.abs(tile[70:150, 50:130].astype(int) - (128 * (1 - FILL_ALPHA) + colour * FILL_ALPHA)).max() <= 1
    assert (tile[100, 40] == colour).all() and (tile[60, 100] == colour).all()  # the outline
    assert (tile[200:, :] == 128).all() and (tile[:, 145:195] == 128).all()  # nothing drawn elsewhere
    assert (tile[90, 200] == 255).all() and (tile[90, 199] == 0).all() and (tile[90, 201] == 0).all()
    assert (tile[64:116, 205:275] == 128).all()  # the region's inside is left to be seen
    label = tile[40:60, 200:240]
    assert (label.min(axis=2) > 200).sum() > 15 and (label == 0).all(axis=2).sum() > 100  # "face", white on black

    highlighted = draw_tile(gray, (height, width), [annotation], [], highlight={7})
    assert (
        (highlighted[100, 39:42] == 255).all()
        and (highlighted[100, 38] == 0).all()
        and (highlighted[100, 42] == 0).all()
    )
    assert (highlighted[90, 200] == 128).all()  # no region given: no box

    big = draw_tile(
        np.full((1000, 1500, 3), 128, np.uint8), (1000, 1500), [], [{"kind": "plate", "bbox": [750, 500, 300, 150]}]
    )
    assert big.shape == (213, THUMB_LONG_SIDE, 3) and (big[120, 160] == 255).all()  # the box's left edge, scaled


def test_the_gallery_stays_small_however_large_the_release(images: list[ReleaseImage], tmp_path: Path) -> None:
    sizes = []
    for copies in (1, 6):
        release = write_photo_release(tmp_path / f"release_{copies}", images, [], copies=copies)
        index = ReleaseIndex(release.uri)
        chosen = {pick.shard for pick in choose_images(index, n_sample=4, seed=0)}
        for tar in (tmp_path / f"release_{copies}" / "shards").glob("*.tar"):
            if tar.stem not in chosen:
                tar.unlink()  # the gallery must not need them
        folder = tmp_path / f"gallery_{copies}"
        tiles = write_gallery(index, folder, n_sample=4, seed=0)
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == sorted(tile.file for tile in tiles) and len(tiles) <= 4 + 3
        for file in files:
            assert max(Image.open(file).size) <= THUMB_LONG_SIDE
        sizes.append(sum(f.stat().st_size for f in files))
        assert sizes[-1] <= (4 + 3) * MAX_THUMB_BYTES
    assert ReleaseIndex(str(tmp_path / "release_6")).manifest["n_images"] == 6 * len(images)
    write_gallery(ReleaseIndex(str(tmp_path / "release_1")), tmp_path / "gallery_1", n_sample=1, seed=3)
    assert len(list((tmp_path / "gallery_1").iterdir())) <= 1 + 3  # an earlier run's thumbnails are gone


def test_the_report_shows_the_gallery_and_every_failure_with_its_reason(report: Path, photos: PhotoRelease) -> None:
    page = (report / "index.html").read_text()
    gallery = page[page.index("<h2>Gallery</h2>") : page.index("<h2>Mask properties</h2>")]
    thumbnails = re.findall(r'src="(gallery/sa_\d+\.jpg)"', gallery)
    assert len(thumbnails) == len(photos.records) and all((report / t).is_file() for t in thumbnails)
    most = max(len(r["annotations"]) for r in photos.records.values())
    assert f"most masks: {most}" in gallery and "lowest predicted IoU: " in gallery and "largest mask: " in gallery
    people = next(i for i, r in photos.records.items() if r["image"]["source"].endswith("000000005802.jpg"))
    faces = len(photos.records[people]["image"]["blurred_regions"])
    masks = len(photos.records[people]["annotations"])
    assert faces >= 2 and f"sa_{people}.jpg: {masks} masks, blurred (outlined): {faces} faces" in gallery

    assert "Inputs not released: 60; by stage: read 30, decode 30." in gallery
    cells = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*</tr>", gallery)
    expected = pd.DataFrame(photos.failures)[["uri", "stage", "error"]]
    assert cells == list(expected.head(FAILURE_ROWS).itertuples(index=False, name=None))
    assert "10 more in failures.csv" in gallery
    written = pd.read_csv(report / "tables" / "failures.csv")
    pd.testing.assert_frame_equal(written[["uri", "stage", "error"]], expected)


def test_a_release_without_failures_or_without_images_says_so(known_release: KnownRelease, tmp_path: Path) -> None:
    build_report(ReportRequest(release=known_release.uri, out=tmp_path / "known", concavity_sample=10))
    page = (tmp_path / "known" / "index.html").read_text()
    assert "No input failed: every input of the release is in a shard." in page
    assert not (tmp_path / "known" / "tables" / "failures.csv").exists()

    writer = ReleaseWriter(str(tmp_path / "empty"))
    writer.write_failures("sa_000000", failure_rows(2))
    writer.finish([], {}, "# nothing released\n")
    build_report(ReportRequest(release=str(tmp_path / "empty"), out=tmp_path / "empty_report", concavity_sample=10))
    page = (tmp_path / "empty_report" / "index.html").read_text()
    assert "The release holds no images: nothing to show." in page and "FileNotFoundError: no such file" in page
    assert list((tmp_path / "empty_report" / "gallery").iterdir()) == []


def test_every_gallery_image_loads_in_headless_chromium(report: Path, photos: PhotoRelease, tmp_path: Path) -> None:
    with serve_folder(report) as url, chromium() as driver:
        check = check_page(driver, f"{url}/index.html", tmp_path / "page.png")
        widths = driver.execute_script(
            "return Array.from(document.querySelectorAll('#gallery img')).map(i => i.naturalWidth);"
        )
        driver.set_window_size(1200, 2600)
        driver.find_element(By.ID, "gallery").screenshot(str(tmp_path / "gallery.png"))
    assert check.broken_images == [] and check.console_errors == []
    assert len(widths) == len(photos.records) and all(w > 0 for w in widths)
    shot = np.asarray(Image.open(tmp_path / "gallery.png").convert("RGB"))
    assert shot.shape[0] > 600 and shot.std() > 30  # rows of drawn photos, not a blank box
