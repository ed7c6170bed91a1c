import pytest

from curation.records import (
    MASK_ID_STRIDE,
    MAX_SAFE_ID,
    STANDARD_IMAGE_FIELDS,
    image_entry,
    image_file_name,
    image_key,
    with_annotation_ids,
)


def test_image_entry_keeps_the_standard_fields_first():
    entry = image_entry(5, (100, 150), {"source": "s3://b/x.jpg", "width": 1, "country": "NZ"})
    assert list(entry)[:4] == list(STANDARD_IMAGE_FIELDS)
    assert entry == {
        "image_id": 5,
        "width": 150,
        "height": 100,
        "file_name": "sa_5.jpg",
        "source": "s3://b/x.jpg",
        "country": "NZ",
    }


def test_images_are_named_as_in_sa1b():
    assert image_key(333521560) == "sa_333521560" and image_file_name(7) == "sa_7.jpg"


def test_annotation_ids_follow_the_image_id_and_the_masks_place():
    annotations = with_annotation_ids(12, [{"area": 5, "id": 0}, {"area": 3, "id": 0}, {"area": 1}])
    assert [a["id"] for a in annotations] == [12_000_000, 12_000_001, 12_000_002]
    assert [a["area"] for a in annotations] == [5, 3, 1]
    assert {a["id"] // MASK_ID_STRIDE for a in annotations} == {12}
    assert with_annotation_ids(0, [{}])[0]["id"] == 0


def test_annotation_ids_of_different_images_never_meet():
    ids = [a["id"] for image_id in range(50) for a in with_annotation_ids(image_id, [{}] * 30)]
    assert len(set(ids)) == len(ids) == 1500


def test_annotation_ids_refuse_what_the_scheme_cannot_hold():
    with pytest.raises(ValueError, match="more than the 1000000 ids"):
        with_annotation_ids(3, [{}] * (MASK_ID_STRIDE + 1))
    with pytest.raises(ValueError, match="outside 0.."):
        with_annotation_ids(-1, [{}])
    largest = MAX_SAFE_ID // MASK_ID_STRIDE - 1
    assert with_annotation_ids(largest, [{}])[0]["id"] <= MAX_SAFE_ID
    with pytest.raises(ValueError, match="outside 0.."):
        with_annotation_ids(largest + 1, [{}])
