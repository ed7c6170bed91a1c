"""The review app in real headless Chromium against its real server on 127.0.0.1 with the shipped
model (`sae_tiny`), over a release of real photos: list, reject, accept, brush, add a mask with two
clicks (drawn exactly as SamPredictor decodes those clicks), undo/redo, save, the audit of what was
saved, reload, and two tabs saving one image."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from analysis.audit import score_corrections
from curation.images import decode_image
from sam_core.checkpoints import load_sam
from sam_core.mask_ops import interior_point, rle_counts
from sam_core.predictor import Prediction, SamPredictor
from tests.analysis.photo_release import PhotoRelease
from tests.browser import chromium
from tests.review.conftest import REVIEWED, RunningReview
from tests.review.review_page import ReviewPage


@pytest.fixture
def page(review: RunningReview) -> Iterator[ReviewPage]:
    with chromium() as driver:
        yield ReviewPage(driver, review.url)


def saved_record(review: RunningReview, image_id: int) -> dict[str, Any]:
    status, record = review.call("GET", f"api/images/{image_id}/corrections")
    assert status == 200, record
    return record


def mask_of(annotation: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode(annotation["segmentation"]).astype(bool)


def counts_of(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of an HxW bool mask, through pycocotools' own encoder."""
    return rle_counts(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()


def assert_drawn(drawn: dict[str, Any], prediction: Prediction) -> None:
    """The page drew the candidate of highest predicted IoU, pixel for pixel."""
    best = int(np.argmax(prediction.iou_predictions))
    assert drawn["candidate"] == best
    assert drawn["predicted_iou"] == pytest.approx(float(prediction.iou_predictions[best]), abs=1e-6)
    assert drawn["counts"] == counts_of(prediction.masks[best])


def test_list_sorts_and_filters(page: ReviewPage, review_release: PhotoRelease) -> None:
    assert page.open_list() == REVIEWED
    n_masks = {i: len(review_release.records[i]["annotations"]) for i in REVIEWED}
    assert n_masks[1] != n_masks[2]
    header = page.driver.find_element(By.CSS_SELECTOR, '#image-table th[data-key="n_masks"]')
    header.click()
    assert page.table_ids() == sorted(REVIEWED, key=n_masks.get)
    header.click()
    assert page.table_ids() == sorted(REVIEWED, key=n_masks.get, reverse=True)
    fewest = min(n_masks.values())
    page.driver.find_element(By.CSS_SELECTOR, '#filters input[data-filter="n_masks"][data-bound="min"]').send_keys(
        str(fewest + 1)
    )
    assert page.table_ids() == [i for i in REVIEWED if n_masks[i] > fewest]
    cells = page.driver.find_elements(By.CSS_SELECTOR, "#image-table tbody tr td")
    assert cells[3].text == str(max(n_masks.values()))


def test_review_an_image_save_and_reload(page: ReviewPage, review: RunningReview, review_release: PhotoRelease) -> None:
    record = review_release.records[1]
    automatic = {ann["id"]: ann for ann in record["annotations"]}
    rejected, accepted, brushed, first_object, second_object = list(automatic)[:5]
    page.open_list()
    page.open_image(1)
    assert page.statuses() == {str(i): "pending" for i in automatic}

    page.select_mask(rejected)
    page.press("r")
    assert page.statuses()[str(rejected)] == "rejected"
    page.press(Keys.CONTROL, "z")
    assert page.statuses()[str(rejected)] == "pending"
    page.press(Keys.CONTROL, Keys.SHIFT, "z")
    assert page.statuses()[str(rejected)] == "rejected"
    page.select_mask(accepted)
    page.click("accept")
    assert page.statuses()[str(accepted)] == "accepted"

    page.select_mask(brushed)
    page.press("b")
    x, y = interior_point(mask_of(automatic[brushed]))
    width, height = record["image"]["width"], record["image"]["height"]
    stroke = [(min(x + dx, width - 1), min(y + dy, height - 1)) for dx, dy in ((0, 0), (20, 0), (40, 10))]
    page.drag_pixels(stroke)
    assert page.statuses()[str(brushed)] == "edited"

    page.press("n")
    page.click_pixel(*interior_point(mask_of(automatic[first_object])))
    page.wait_decodes(1)
    first = page.review("lastDrawn")
    page.click_pixel(*interior_point(mask_of(automatic[second_object])))
    page.wait_decodes(2)
    second = page.review("lastDrawn")
    assert first["request"]["previous"] is None
    assert second["request"]["previous"] == {"decode_id": first["decode_id"], "candidate": first["candidate"]}
    assert second["request"]["points"][0] == first["request"]["points"][0]
    assert [p[2] for p in second["request"]["points"]] == [1, 1]

    predictor = SamPredictor(load_sam("sae_tiny", "sae_tiny"))
    status, jpeg = review.call("GET", "api/images/1/image.jpg")
    assert status == 200
    predictor.set_image(decode_image(jpeg))
    points = np.asarray(second["request"]["points"], np.float64)
    after_one = predictor.predict(points[:1, :2], points[:1, 2].astype(np.int64))
    assert_drawn(first, after_one)
    previous_logits = after_one.low_res_logits[first["candidate"]][None]
    after_two = predictor.predict(points[:, :2], points[:, 2].astype(np.int64), mask_input=previous_logits)
    assert_drawn(second, after_two)

    page.press(Keys.ENTER)
    page.press(Keys.ESCAPE)
    before_reload = page.statuses()
    assert before_reload["new-1"] == "added"
    page.press(Keys.CONTROL, "s")
    page.wait("document.getElementById('status-line').textContent.startsWith('saved version 1')")

    saved = saved_record(review, 1)
    kept = {ann["review"]["source_id"]: ann for ann in saved["annotations"]}
    assert {k: ann["review"]["status"] for k, ann in kept.items()} == {
        accepted: "accepted",
        brushed: "edited",
        None: "added",
    }
    assert [r["source_id"] for r in saved["review"]["rejected"]] == [rejected]
    assert sorted(saved["review"]["pending"]) == sorted(set(automatic) - {rejected, accepted, brushed})
    assert kept[None]["segmentation"]["size"] == second["size"]
    assert counts_of(mask_of(kept[None])) == second["counts"]
    original, edited = mask_of(automatic[brushed]), mask_of(kept[brushed])
    assert (edited >= original).all() and edited.sum() > original.sum()
    for px, py in stroke:
        assert edited[round(py), round(px)]

    audit = score_corrections(str(review.corrections))  # the loop closes on what the browser saved
    brushed_iou = original.sum() / edited.sum()  # the brush only adds pixels: IoU = |automatic| / |edited|
    assert audit.pairs.set_index("id")["iou"].to_dict() == pytest.approx({accepted: 1.0, brushed: brushed_iou})
    assert (audit.deleted_ids, audit.added_ids) == ([rejected], [kept[None]["id"]])
    assert audit.pending_ids == sorted(set(automatic) - {rejected, accepted, brushed})
    all_pairs = audit.summary.loc["all"]
    assert all_pairs["pairs"] == 2 and all_pairs["mean_iou"] == pytest.approx((1.0 + brushed_iou) / 2)
    assert all_pairs["share_iou_above_0_90"] == (1.0 if brushed_iou > 0.9 else 0.5)
    assert audit.times.loc[["accepted", "edited", "added", "rejected"], "masks"].tolist() == [1, 1, 1, 1]

    page.driver.refresh()
    page.wait_open(0)
    assert page.statuses() == {k: v for k, v in before_reload.items() if k != "new-1"} | {
        str(kept[None]["id"]): "added"
    }
    assert page.review("state")["base_version"] == 1
    assert len(page.review("state")["masks"]) == len(automatic) + 1


def test_two_tabs_saving_one_image_see_a_conflict(
    page: ReviewPage, review: RunningReview, review_release: PhotoRelease
) -> None:
    first_mask, second_mask, third_mask = [a["id"] for a in review_release.records[2]["annotations"][:3]]
    driver = page.driver
    tab_a = driver.current_window_handle
    page.open_list()
    page.open_image(2)
    driver.switch_to.new_window("tab")
    tab_b = driver.current_window_handle
    page.open_list()
    page.open_image(2)
    conflict = driver.find_element(By.ID, "conflict")

    driver.switch_to.window(tab_a)
    page.select_mask(first_mask)
    page.click("accept")
    page.click("save")
    page.wait("document.getElementById('status-line').textContent.startsWith('saved version 1')")

    driver.switch_to.window(tab_b)
    page.select_mask(second_mask)
    page.click("reject")
    page.click("save")
    page.wait("!document.getElementById('conflict').hidden")
    assert "version 1" in conflict.text
    assert saved_record(review, 2)["review"]["version"] == 1
    page.click("conflict-reload")
    page.wait_open(1)
    assert not conflict.is_displayed()
    assert page.statuses()[str(first_mask)] == "accepted" and page.statuses()[str(second_mask)] == "pending"
    page.select_mask(second_mask)
    page.click("reject")
    page.click("save")
    page.wait("document.getElementById('status-line').textContent.startsWith('saved version 2')")

    driver.switch_to.window(tab_a)
    conflict = driver.find_element(By.ID, "conflict")
    page.select_mask(third_mask)
    page.click("reject")
    page.click("save")
    page.wait("!document.getElementById('conflict').hidden")
    assert "version 2" in conflict.text
    page.click("conflict-overwrite")
    page.wait("document.getElementById('status-line').textContent.startsWith('saved version 3')")
    assert not conflict.is_displayed()
    saved = saved_record(review, 2)
    assert saved["review"]["version"] == 3
    assert [a["review"]["source_id"] for a in saved["annotations"]] == [first_mask]
    assert [r["source_id"] for r in saved["review"]["rejected"]] == [third_mask]
