import numpy as np
import pytest
import torch

from curation.record_check import record_problems
from curation.records import image_entry, with_annotation_ids
from sam_core.mask_ops import annotation_fields


def _record(image_id: int, masks: np.ndarray) -> dict:
    height, width = masks.shape[1:]
    annotations = with_annotation_ids(image_id, annotation_fields(torch.from_numpy(masks)))
    return {"image": image_entry(image_id, (height, width), {"source": "test"}), "annotations": annotations}


def test_records_of_any_masks_are_well_formed():
    """Area and box read off the RLE equal those of the mask itself (`annotation_fields`), exactly:
    empty and full masks, single pixels, masks whose runs cross columns."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = rng.integers(1, 12, size=2)
        masks = rng.random((5, height, width)) < rng.random()
        masks[0], masks[1], masks[2] = False, True, False
        masks[2, rng.integers(height), rng.integers(width)] = True
        assert record_problems(_record(3, masks)) == []


def _damaged(change) -> list[str]:
    masks = np.zeros((2, 6, 5), bool)
    masks[0, 1:4, 2:4] = masks[1, 5, 0] = True
    record = _record(2, masks)
    change(record)
    return record_problems(record)


def _set(path: tuple, value):
    def change(record: dict) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set(("annotations", 0, "area"), 7), "annotation 2000000: area 7, the mask has 6 pixels"),
        (
            _set(("annotations", 0, "bbox"), [2.0, 1.0, 2.0, 3.0]),
            "annotation 2000000: bbox [2.0, 1.0, 2.0, 3.0], the mask's is [2.0, 1.0, 1.0, 2.0]",
        ),
        (_set(("annotations", 1, "id"), 2000000), "annotation 1 has id 2000000, not 2000001 (image_id * 1000000 + i)"),
        (
            _set(("annotations", 0, "segmentation", "counts"), "7"),
            "annotation 2000000: RLE counts cover 7 pixels, not 6 x 5 = 30",
        ),
        (
            _set(("annotations", 0, "segmentation", "counts"), "0z"),
            "annotation 2000000: malformed compressed RLE counts b'0z'",
        ),
        (
            _set(("annotations", 0, "segmentation", "counts"), "1o"),
            "annotation 2000000: malformed compressed RLE counts b'1o'",
        ),
        (_set(("image", "file_name"), "x.jpg"), "file_name 'x.jpg' is not 'sa_2.jpg'"),
        (_set(("image", "height"), 0), "image entry has image_id 2, height 0, width 5: not whole numbers > 0"),
        (lambda record: record["image"].pop("width"), "image entry lacks 'width'"),
        (_set(("annotations",), None), "not an SA-1B record: no annotations list"),
    ],
)
def test_each_defect_of_a_record_is_one_line(change, problem):
    assert _damaged(change) == [problem]
