"""Similar images in the review app: `GET /api/images/<id>/similar` over real HTTP against
brute-force search of the release's embeddings, its 404 for a release without embeddings and its
400s, and the "similar images" panel of the page in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from analysis.review.server import MAX_SIMILAR
from curation.embeddings import read_embeddings
from curation.release import iter_release
from tests.analysis.embedded_release import near_copy, unit_vectors, write_embedded_release
from tests.analysis.photo_release import PhotoRelease
from tests.analysis.test_neighbours import brute_force_nearest
from tests.browser import chromium
from tests.review.conftest import RunningReview, running_review
from tests.review.review_page import ReviewPage


@pytest.fixture(scope="module")
def embedded_release(review_release: PhotoRelease, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The review release's three photos again, each shard committed with planted embeddings:
    image 3 (not under review) is image 1's near copy."""
    images = list(iter_release(review_release.uri))
    vectors = unit_vectors(len(images), seed=21)
    vectors[2] = near_copy(vectors[0], 0.1, seed=22)
    return write_embedded_release(tmp_path_factory.mktemp("embedded_review"), images, vectors, per_shard=2)


@pytest.fixture
def similar_review(embedded_release: str, tmp_path: Path) -> Iterator[RunningReview]:
    with running_review(embedded_release, tmp_path / "corrections", tmp_path / "cache") as running:
        yield running


def test_similar_images_are_the_nearest_by_embedding(similar_review: RunningReview, embedded_release: str) -> None:
    stored = read_embeddings(embedded_release)
    expected_ids, expected_cosines = brute_force_nearest(stored.image_ids, stored.vectors, 1, 2)
    assert expected_ids == [3, 2]  # the planted copy first
    status, answer = similar_review.call("GET", "api/images/1/similar?k=8")  # more than the release has
    assert status == 200 and answer["image_id"] == 1 and answer["model"] == "sae_tiny"
    assert [entry["image_id"] for entry in answer["similar"]] == expected_ids
    assert [entry["cosine"] for entry in answer["similar"]] == pytest.approx(expected_cosines, abs=1e-5)
    assert [entry["under_review"] for entry in answer["similar"]] == [False, True]  # under review: 1 and 2
    status, answer = similar_review.call("GET", "api/images/2/similar?k=1")
    assert (
        status == 200
        and [e["image_id"] for e in answer["similar"]] == brute_force_nearest(stored.image_ids, stored.vectors, 2, 1)[0]
    )
    assert (
        similar_review.call("GET", "api/images/2/similar")[1]["similar"]
        == similar_review.call("GET", "api/images/2/similar?k=8")[1]["similar"]
    )


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("api/images/1/similar?k=0", 400, f"k must be a whole number from 1 to {MAX_SIMILAR}"),
        (f"api/images/1/similar?k={MAX_SIMILAR + 1}", 400, "k must be a whole number"),
        ("api/images/1/similar?k=-3", 400, "k must be a whole number"),
        ("api/images/1/similar?k=two", 400, "k must be a whole number"),
        ("api/images/1/similar?n=2", 400, "unknown query parameters ['n']"),
        ("api/images/1/similar?k=", 400, "k must be a whole number"),
        ("api/images/1/similar?k", 400, "the query string does not parse"),
        ("api/images/3/similar", 404, "image 3 is not under review"),
    ],
)
def test_a_bad_similar_request_says_why(similar_review: RunningReview, path: str, status: int, reason: str) -> None:
    answer_status, answer = similar_review.call("GET", path)
    assert answer_status == status and reason in answer["error"]


def test_a_release_without_embeddings_has_no_similar_images(review: RunningReview) -> None:
    status, answer = review.call("GET", "api/images/1/similar?k=4")
    assert status == 404 and answer["error"].startswith("no similar images: ")
    assert "sa-engine embed" in answer["error"]
    assert review.call("POST", "api/images/1/similar")[0] == 405


def test_the_page_lists_similar_images_and_links_those_under_review(
    similar_review: RunningReview, embedded_release: str
) -> None:
    stored = read_embeddings(embedded_release)
    shown = "Array.from(document.querySelectorAll('#similar li')).map((li) => li.dataset.imageId).join()"
    with chromium() as driver:
        page = ReviewPage(driver, similar_review.url)
        page.open_list()
        page.open_image(1)
        page.driver.find_element(By.CSS_SELECTOR, "#similar summary").click()
        page.wait(f"{shown} === '3,2'")
        items = page.driver.find_elements(By.CSS_SELECTOR, "#similar li")
        assert [int(li.get_attribute("data-image-id")) for li in items] == [3, 2]
        assert items[0].find_elements(By.TAG_NAME, "a") == [] and items[0].text.startswith("sa_3.jpg 0.")
        items[1].find_element(By.TAG_NAME, "a").click()  # image 2 is under review: its view opens
        page.wait_open(1)
        assert page.review("state")["image_id"] == 2
        expected = ",".join(map(str, brute_force_nearest(stored.image_ids, stored.vectors, 2, 2)[0]))
        assert page.wait(f"{shown} === '{expected}'")  # the open panel follows the image shown
