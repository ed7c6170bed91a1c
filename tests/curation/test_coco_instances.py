"""Reading COCO instances files of real photos, and the validation split that training never sees."""

import json
import shutil

import numpy as np
import pytest
from pycocotools.coco import COCO

from curation.coco_instances import CocoInstancesError, is_validation, read_coco_instances
from tests.conftest import REAL

COCO_DIR = REAL / "coco_train50"
INSTANCES, IMAGES = COCO_DIR / "instances.json", COCO_DIR / "images"


def test_the_splits_partition_the_photos_and_separate_crowds():
    everything = read_coco_instances(INSTANCES, IMAGES)
    validation = read_coco_instances(INSTANCES, IMAGES, "validation")
    training = read_coco_instances(INSTANCES, IMAGES, "training")
    ids = [p.image_id for p in everything]
    assert sorted(p.image_id for p in validation + training) == sorted(ids) and len(ids) == 50
    assert {p.image_id for p in validation}.isdisjoint(p.image_id for p in training)
    assert 15 <= len(validation) <= 25  # about VALIDATION_SHARE of 50
    assert all(is_validation(p.image_id) for p in validation)
    coco = COCO(str(INSTANCES))
    crowded = next(p for p in everything if p.crowd)
    labels = coco.loadAnns(coco.getAnnIds(imgIds=crowded.image_id))
    assert len(crowded.objects) == sum(not a["iscrowd"] for a in labels)
    assert len(crowded.crowd) == sum(a["iscrowd"] for a in labels)
    first = next(a for a in labels if not a["iscrowd"])
    np.testing.assert_array_equal(crowded.masks()[0], coco.annToMask(first).astype(bool))
    image = crowded.pixels()
    assert image.shape == (crowded.height, crowded.width, 3) and image.dtype == np.uint8


def test_the_split_is_a_rule_on_the_id_alone():
    # the same id falls on the same side in every file that holds it, whatever else the file holds
    assert [is_validation(i) for i in (391895, 391895, 5802)] == [is_validation(391895)] * 2 + [is_validation(5802)]
    shares = np.mean([is_validation(i) for i in range(10_000)])
    assert 0.38 < shares < 0.42


def _write(tmp_path, images, annotations):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


@pytest.mark.parametrize(
    ("entry", "annotation", "message"),
    [
        ({"file_name": "../secret.jpg"}, None, "leaves the images folder"),
        ({"file_name": "/etc/passwd"}, None, "leaves the images folder"),
        ({"height": 0}, None, "has no valid height and width"),
        ({}, {"segmentation": {"size": [10, 10], "counts": "x"}}, "neither polygons nor an RLE of the image's size"),
        ({}, {"segmentation": [[1.0, 2.0, "a"]]}, "does not rasterise"),
    ],
)
def test_untrusted_instances_files_are_refused_naming_the_image(tmp_path, entry, annotation, message):
    name = "000000391895.jpg"
    shutil.copy(IMAGES / name, tmp_path / name)
    image = {"id": 7, "file_name": name, "height": 360, "width": 640, **entry}
    labels = [{"id": 1, "image_id": 7, "iscrowd": 0, **annotation}] if annotation else []
    with pytest.raises(CocoInstancesError, match=message):
        read_coco_instances(_write(tmp_path, [image], labels), tmp_path)


def test_a_photo_whose_size_disagrees_with_its_entry_is_refused_when_read(tmp_path):
    name = "000000391895.jpg"
    shutil.copy(IMAGES / name, tmp_path / name)
    image = {"id": 7, "file_name": name, "height": 300, "width": 640}
    (photo,) = read_coco_instances(_write(tmp_path, [image], []), tmp_path)
    with pytest.raises(CocoInstancesError, match="^image 7 .* is 640x360, its entry says 640x300$"):
        photo.pixels()


def test_a_file_that_is_not_an_instances_file_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(CocoInstancesError, match="not a COCO instances file"):
        read_coco_instances(tmp_path / "x.json", tmp_path)
    with pytest.raises(CocoInstancesError, match="no such images folder"):
        read_coco_instances(INSTANCES, tmp_path / "missing")
