"""The review app's HTTP API, over real HTTP on 127.0.0.1 with the shipped model: listing, images,
embedding once, decoding as SamPredictor does, saving versions, conflicts, the COCO export, and
malformed requests answered with a 4xx and a reason, never a 500."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import numpy as np
import pytest

from analysis.review.server import MAX_BODY_BYTES
from curation.images import decode_image
from curation.release import iter_release
from sam_core.checkpoints import load_sam
from sam_core.mask_ops import decode_rle
from sam_core.predictor import SamPredictor
from tests.review.conftest import REVIEWED, RunningReview, running_review, uncompressed_rle

POINT = [120.0, 200.0, 1]
SECOND_POINT = [300.0, 80.0, 0]


@pytest.fixture(scope="module")
def jpegs(review_release) -> dict[int, bytes]:
    return {item.record["image"]["image_id"]: item.image_bytes for item in iter_release(review_release.uri)}


@pytest.fixture(scope="module")
def reference(jpegs) -> SamPredictor:
    """SamPredictor with the shipped model, image 1 set: what every decode must equal."""
    predictor = SamPredictor(load_sam("sae_tiny", "sae_tiny"))
    predictor.set_image(decode_image(jpegs[1]))
    return predictor


def _masks(candidates: list[dict]) -> np.ndarray:
    return np.stack([decode_rle(c["segmentation"]) for c in candidates])


def _points(*points: list) -> tuple[np.ndarray, np.ndarray]:
    return np.array([p[:2] for p in points]), np.array([p[2] for p in points])


def test_the_list_shows_each_image_with_its_mask_statistics(review, review_release):
    status, answer = review.call("GET", "api/images")
    assert status == 200 and answer["release"] == review_release.uri and answer["model"] == "sae_tiny"
    assert [row["image_id"] for row in answer["images"]] == REVIEWED
    for row in answer["images"]:
        record = review_release.records[row["image_id"]]
        ious = [a["predicted_iou"] for a in record["annotations"]]
        areas = [a["area"] for a in record["annotations"]]
        assert row["file_name"] == f"sa_{row['image_id']}.jpg" and row["version"] == 0
        assert (row["width"], row["height"]) == (record["image"]["width"], record["image"]["height"])
        assert row["n_masks"] == len(record["annotations"]) > 0
        assert row["mean_predicted_iou"] == pytest.approx(sum(ious) / len(ious))
        assert row["min_predicted_iou"] == min(ious) and row["mean_stability"] == pytest.approx(0.97)
        assert row["median_area"] == float(np.median(areas))


def test_an_image_comes_with_its_automatic_masks_and_its_jpeg(review, review_release, jpegs):
    status, answer = review.call("GET", "api/images/2")
    record = review_release.records[2]
    assert status == 200 and answer["image"] == record["image"] and answer["saved"] is None
    fields = ("id", "segmentation", "bbox", "area", "predicted_iou", "stability_score")
    assert answer["annotations"] == [{k: a[k] for k in fields} for a in record["annotations"]]
    status, jpeg = review.call("GET", "api/images/2/image.jpg")
    assert status == 200 and jpeg == jpegs[2]


def test_an_image_is_embedded_once_then_read_from_memory_and_by_a_new_server_from_disk(
    review, review_release, reference, tmp_path
):
    assert review.call("POST", "api/images/1/embed")[1]["source"] == "computed"
    status, answer = review.call("POST", "api/images/1/embed")
    assert status == 200 and answer["source"] == "memory" and answer["seconds"] >= 0
    (saved,) = (review.cache_dir / review.app.prompts.cache.model.sha256).glob("*.npz")
    assert np.load(saved, allow_pickle=False)["embedding"].shape == tuple(reference.image_embedding().shape)
    with running_review(review_release.uri, tmp_path / "other", review.cache_dir) as fresh:
        assert fresh.call("POST", "api/images/1/embed")[1]["source"] == "disk"
        status, answer = fresh.call("POST", "api/images/1/decode", {"points": [POINT], "box": None, "previous": None})
    expected = reference.predict(*_points(POINT))
    assert status == 200 and np.array_equal(_masks(answer["candidates"]), expected.masks)


def test_a_decode_gives_the_predictors_three_candidates(review, reference):
    body = {"points": [POINT, SECOND_POINT], "box": [40, 60, 400, 380], "previous": None}
    status, answer = review.call("POST", "api/images/1/decode", body)
    expected = reference.predict(*_points(POINT, SECOND_POINT), box=np.array([40, 60, 400, 380]))
    assert status == 200 and len(answer["candidates"]) == 3
    assert np.array_equal(_masks(answer["candidates"]), expected.masks)
    assert [c["predicted_iou"] for c in answer["candidates"]] == pytest.approx(expected.iou_predictions.tolist())
    assert [c["area"] for c in answer["candidates"]] == expected.masks.sum((1, 2)).tolist()


def test_a_decode_with_previous_feeds_that_candidates_logits_back(review, reference):
    first = review.call("POST", "api/images/1/decode", {"points": [POINT], "box": None, "previous": None})[1]
    body = {"points": [POINT, SECOND_POINT], "box": None, "previous": {"decode_id": first["decode_id"], "candidate": 2}}
    status, answer = review.call("POST", "api/images/1/decode", body)
    shown = reference.predict(*_points(POINT))
    expected = reference.predict(*_points(POINT, SECOND_POINT), mask_input=shown.low_res_logits[2:3])
    without = reference.predict(*_points(POINT, SECOND_POINT))
    assert status == 200 and answer["decode_id"] != first["decode_id"]
    assert np.array_equal(_masks(answer["candidates"]), expected.masks)
    assert not np.array_equal(expected.masks, without.masks)  # the previous logits change the answer
    other_image = review.call("POST", "api/images/2/decode", body)  # decode ids are kept per image
    assert other_image[0] == 400 and "not among the last" in other_image[1]["error"]


def test_a_precomputed_embedding_must_fit_the_model(reference):
    embedding = reference.image_embedding()
    with pytest.raises(ValueError, match="is not this model's"):
        SamPredictor(reference.model).set_embedding(embedding[:, :-1], (10, 10), (10, 10))


def _review_body(review_release, image_id: int, candidate: dict, base_version: int) -> dict:
    """Accept mask 0, reject mask 1, edit mask 2 (a 10x10 square added, sent uncompressed), leave
    mask 3 pending, add `candidate`."""
    anns = review_release.records[image_id]["annotations"]
    edited = decode_rle(anns[2]["segmentation"]).copy()
    edited[0:10, 0:10] = True
    uncompressed = uncompressed_rle(edited)
    return {
        "base_version": base_version,
        "seconds_on_image": 42.5,
        "masks": [
            {"source_id": anns[0]["id"], "status": "accepted", "segmentation": anns[0]["segmentation"], "seconds": 1.0},
            {"source_id": anns[1]["id"], "status": "rejected", "segmentation": None, "seconds": 2.0},
            {"source_id": anns[2]["id"], "status": "edited", "segmentation": uncompressed, "seconds": 3.0},
            {"source_id": anns[3]["id"], "status": "pending", "seconds": 0.0},
            {
                "source_id": None,
                "status": "added",
                "segmentation": candidate["segmentation"],
                "predicted_iou": candidate["predicted_iou"],
                "seconds": 4.0,
            },
        ],
    }


def test_a_save_is_stored_versioned_shown_again_and_exported_as_coco(review, review_release):
    decoded = review.call("POST", "api/images/1/decode", {"points": [POINT], "box": None, "previous": None})[1]
    body = _review_body(review_release, 1, decoded["candidates"][0], base_version=0)
    status, saved = review.call("PUT", "api/images/1/corrections", body)
    assert status == 200 and saved["version"] == 1
    status, record = review.call("GET", "api/images/1/corrections")
    anns = review_release.records[1]["annotations"]
    assert status == 200 and record["review"]["version"] == 1 and record["review"]["saved_at"] == saved["saved_at"]
    assert record["image"] == review_release.records[1]["image"]
    assert [(a["id"], a["review"]["status"]) for a in record["annotations"]] == [
        (anns[0]["id"], "accepted"),
        (anns[2]["id"], "edited"),
        (max(a["id"] for a in anns) + 1, "added"),
    ]
    edited = decode_rle(record["annotations"][1]["segmentation"])
    assert edited[0:10, 0:10].all() and record["annotations"][1]["area"] == int(edited.sum())
    assert record["annotations"][2]["segmentation"] == decoded["candidates"][0]["segmentation"]
    assert [m["review"]["seconds"] for m in record["annotations"]] == [1.0, 3.0, 4.0]
    assert [r["source_id"] for r in record["review"]["rejected"]] == [anns[1]["id"]]
    assert record["review"]["pending"] == [a["id"] for a in anns[3:]] and record["review"]["seconds_on_image"] == 42.5
    assert review.call("GET", "api/images/1")[1]["saved"] == record  # reopening shows the saved state
    assert [row["version"] for row in review.call("GET", "api/images")[1]["images"]] == [1, 0]
    coco = json.loads((review.corrections / "coco.json").read_text())
    assert [(a["id"], a["image_id"], a["segmentation"]) for a in coco["annotations"]] == [
        (a["id"], 1, a["segmentation"]) for a in record["annotations"]
    ]
    image = review_release.records[1]["image"]
    assert coco["images"] == [{"file_name": "sa_1.jpg", "width": image["width"], "height": image["height"], "id": 1}]
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    status, again = review.call("PUT", "api/images/1/corrections", {**body, "base_version": 1})
    assert status == 200 and again["version"] == 2


def test_a_save_on_a_stale_version_is_a_conflict_that_keeps_the_stored_one(review, review_release):
    decoded = review.call("POST", "api/images/1/decode", {"points": [POINT], "box": None, "previous": None})[1]
    body = _review_body(review_release, 1, decoded["candidates"][0], base_version=0)
    first = review.call("PUT", "api/images/1/corrections", body)[1]
    status, answer = review.call("PUT", "api/images/1/corrections", {**body, "masks": []})
    assert status == 409
    assert answer == {"error": "conflict", "stored_version": 1, "saved_at": first["saved_at"]}
    assert len(review.call("GET", "api/images/1/corrections")[1]["annotations"]) == 3
    status, overwrite = review.call("PUT", "api/images/1/corrections", {**body, "masks": [], "base_version": 1})
    assert status == 200 and overwrite["version"] == 2


def test_an_image_never_saved_has_no_corrections(review):
    assert review.call("GET", "api/images/2/corrections") == (404, {"error": "not saved"})


DECODE = "api/images/1/decode"
"""Image 1 (picture1.jpg) is 480x481 (WxH); its automatic masks have ids 1000, 1001, ... (tests.analysis.photo_release)."""
SAVE = "api/images/1/corrections"


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("POST", DECODE, b"{", "not JSON"),
        ("POST", DECODE, b"\xff\xfe", "not JSON"),
        ("POST", DECODE, b"[]", "JSON object"),
        ("POST", DECODE, b"", "JSON object"),
        ("POST", DECODE, {"points": [[1, 2]]}, "3 numbers"),
        ("POST", DECODE, {"points": [[1, 2, 5]]}, "label"),
        ("POST", DECODE, {"points": [["a", 2, 1]]}, "finite number"),
        ("POST", DECODE, b'{"points": [[NaN, 2, 1]]}', "finite number"),
        ("POST", DECODE, {"points": "here"}, "must be a list"),
        ("POST", DECODE, {"points": [], "box": None}, "at least one point or a box"),
        ("POST", DECODE, {"points": [[99999, 1, 1]]}, "outside"),
        ("POST", DECODE, {"box": [50, 50, 10, 10]}, "XYXY"),
        ("POST", DECODE, {"box": [1, 2, 3]}, "4 numbers"),
        ("POST", DECODE, {"points": [POINT], "previous": {"decode_id": 10**9, "candidate": 0}}, "not among"),
        ("POST", DECODE, {"points": [POINT], "previous": {"decode_id": -1, "candidate": 0}}, "decode_id"),
        ("POST", DECODE, {"points": [POINT], "previous": [1, 0]}, "previous must be a JSON object"),
        ("POST", DECODE, {"pointz": [POINT]}, "unknown fields"),
        ("PUT", SAVE, {}, "base_version"),
        ("PUT", SAVE, {"base_version": -1, "masks": []}, "base_version"),
        ("PUT", SAVE, {"base_version": True, "masks": []}, "base_version"),
        ("PUT", SAVE, {"base_version": 0, "masks": {}}, "masks must be a list"),
        ("PUT", SAVE, {"base_version": 0, "masks": [], "seconds_on_image": -3}, "seconds_on_image"),
        ("PUT", SAVE, {"base_version": 0, "masks": [], "seconds_on_image": "1"}, "seconds_on_image"),
        ("PUT", SAVE, {"base_version": 0, "masks": [7]}, "masks[0] must be a JSON object"),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": 5, "status": "rejected"}]}, "not an automatic"),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": 1000, "status": "nice"}]}, "status 'nice'"),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": 1000, "status": 3}]}, "status must be a string"),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": "1000", "status": "rejected"}]}, "source_id"),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": 1000, "status": "edited"}]}, "needs a segmentation"),
        (
            "PUT",
            SAVE,
            {
                "base_version": 0,
                "masks": [{"source_id": 1000, "status": "edited", "segmentation": {"size": [1, 1], "counts": [1]}}],
            },
            "size",
        ),
        (
            "PUT",
            SAVE,
            {
                "base_version": 0,
                "masks": [
                    {"source_id": 1000, "status": "edited", "segmentation": {"size": [481, 480], "counts": "\u00e9"}}
                ],
            },
            "malformed",
        ),
        (
            "PUT",
            SAVE,
            {"base_version": 0, "masks": [{"source_id": 1000, "status": "rejected", "seconds": 1e400}]},
            "finite",
        ),
        ("PUT", SAVE, {"base_version": 0, "masks": [{"source_id": 1000, "status": "rejected"}] * 2}, "twice"),
        ("GET", "api/images/..%2f..%2fx", None, "not 1 to 18 decimal digits"),
        ("GET", "api/images/%2e%2e", None, "not 1 to 18 decimal digits"),
        ("GET", "api/images/%2e%2e/image.jpg", None, "not 1 to 18 decimal digits"),
        ("GET", "api/images/1" + "0" * 18, None, "not 1 to 18 decimal digits"),
        ("GET", "api/images/-1/corrections", None, "not 1 to 18 decimal digits"),
        ("PUT", "api/images/abc/corrections", {"base_version": 0, "masks": []}, "not 1 to 18 decimal digits"),
    ],
)
def test_a_malformed_request_is_a_400_with_a_reason(review, method, path, body, reason):
    status, answer = review.call(
        method, path, body if not isinstance(body, bytes) else None, body if isinstance(body, bytes) else None
    )
    assert status == 400, answer
    assert reason in answer["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "api/images/3", 404, "image 3 is not under review"),  # in the release, not reviewed
        ("GET", "api/images/999", 404, "image 999 is not under review"),
        ("POST", "api/images/999/embed", 404, "not under review"),
        ("GET", "api/images/../x", 404, "no such route"),
        ("GET", "api/images/1/2", 404, "no such route"),
        ("GET", "api/images/1/image.jpg/x", 404, "no such route"),
        ("GET", "api/nothing", 404, "no such route"),
        ("GET", "static/../server.py", 404, "no such file"),
        ("GET", "static/%2e%2e%2fserver.py", 404, "no such file"),
        ("DELETE", "api/images/1", 405, "DELETE is not allowed"),
        ("GET", "api/images/1/decode", 405, "allowed: POST"),
        ("POST", "api/images", 405, "allowed: GET"),
    ],
)
def test_an_unknown_image_or_route_or_method_is_refused(review, method, path, status, reason):
    answer = review.call(method, path, {} if method in ("POST", "PUT", "DELETE") else None)
    assert answer[0] == status and reason in answer[1]["error"], answer


def test_a_body_over_the_limit_is_refused_unread(review: RunningReview):
    address = urlsplit(review.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.putrequest("POST", "/api/images/1/decode")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over the limit" in json.loads(response.read())["error"]
    connection.close()
    assert review.call("GET", "api/images")[0] == 200  # the server goes on


def test_the_page_and_its_files_are_served(review):
    status, page = review.call("GET", "")
    assert status == 200 and b"review.js" in page
    for name in ("review.js", "review.css"):
        assert review.call("GET", f"static/{name}")[0] == 200
