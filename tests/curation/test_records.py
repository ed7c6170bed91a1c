import numpy as np
import torch

from curation.records import image_entry, rescale_annotations
from sam_core.mask_ops import decode_rle, encode_rles


def _annotation(mask: np.ndarray) -> dict:
    return {
        "id": 7,
        "segmentation": encode_rles(torch.from_numpy(mask)[None])[0],
        "bbox": [0.0, 0.0, 0.0, 0.0],
        "area": int(mask.sum()),
        "predicted_iou": 0.91,
        "stability_score": 0.96,
        "crop_box": [0.0, 0.0, 300.0, 200.0],
        "point_coords": [[100.0, 50.0]],
    }


def test_annotations_move_to_the_release_size():
    mask = np.zeros((200, 300), bool)
    mask[40:120, 60:180] = True  # 80 x 120 px
    speck = np.zeros((200, 300), bool)
    speck[0, 0] = True  # a quarter of a release pixel: vanishes
    moved = rescale_annotations([_annotation(mask), _annotation(speck)], (200, 300), (100, 150))
    assert len(moved) == 1
    (ann,) = moved
    assert ann["id"] == 0 and ann["predicted_iou"] == 0.91
    assert ann["segmentation"]["size"] == [100, 150]
    assert decode_rle(ann["segmentation"]).sum() == ann["area"] == 40 * 60
    assert ann["bbox"] == [30.0, 20.0, 59.0, 39.0]
    assert ann["crop_box"] == [0.0, 0.0, 150.0, 100.0]
    assert ann["point_coords"] == [[50.0, 25.0]]
    same = [_annotation(mask)]
    assert rescale_annotations(same, (200, 300), (200, 300)) is same


def test_image_entry_keeps_the_standard_fields_first():
    entry = image_entry(5, (100, 150), {"source": "s3://b/x.jpg", "width": 1, "country": "NZ"})
    assert list(entry)[:4] == ["image_id", "width", "height", "file_name"]
    assert entry == {
        "image_id": 5,
        "width": 150,
        "height": 100,
        "file_name": "sa_5.jpg",
        "source": "s3://b/x.jpg",
        "country": "NZ",
    }
