"""Copy-paste composites of real COCO photos: exact visible masks, the same every time, only
training-split photos, written as a release the trainer reads."""

import numpy as np
import pytest

from curation.coco_instances import CocoInstancesError, is_validation, read_coco_instances
from curation.release import iter_release
from synthetic.copy_paste import AnnotatedPhoto, CopyPasteSettings, Cutout, cutouts, make_composite
from synthetic.copy_paste_release import load_sources, main
from tests.conftest import REAL

COCO_DIR = REAL / "coco_train50"
COCO = (str(COCO_DIR / "instances.json"), str(COCO_DIR / "images"))
SA1B_IMAGES = str(REAL / "sa1b_samples" / "images")
SETTINGS = CopyPasteSettings(size=256, colour_gain=0.0, brightness=0.0)


@pytest.fixture(scope="module")
def sources():
    return load_sources([COCO], [SA1B_IMAGES])


def test_only_training_photos_are_sources(sources):
    training = [p for p in read_coco_instances(*COCO, "training") if p.objects]
    assert len(sources.annotated) == len(training) and not any(is_validation(p.image_id) for p in training)
    assert all(len(a.masks) == len(p.objects) for a, p in zip(sources.annotated, training))
    assert len(sources.plain) >= 8 + 10  # the SA-1B samples and scikit-image's photos
    assert "training split" in sources.described


def test_composites_are_the_same_every_time_and_vary(sources):
    pieces = cutouts(sources.annotated, SETTINGS.min_cutout_area)
    first = make_composite(4, 2, sources.annotated, sources.plain, pieces, SETTINGS)
    again = make_composite(4, 2, sources.annotated, sources.plain, pieces, SETTINGS)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.masks, again.masks)
    made = [make_composite(4, i, sources.annotated, sources.plain, pieces, SETTINGS) for i in range(24)]
    assert all(max(c.image.shape[:2]) == SETTINGS.size for c in made)
    assert any(c.pasted and not any(c.pasted) for c in made)  # an annotated photo alone
    assert any(c.pasted and all(c.pasted) for c in made)  # a plain background with pastes only
    assert any(any(c.pasted) and not all(c.pasted) for c in made)  # pastes over a photo's own objects


def test_masks_are_exact_visible_regions():
    # Flat-coloured pieces on a black photo: each visible region shows its own piece's colour,
    # pasted regions never overlap, and what a later paste covers leaves the masks below.
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    pieces = [Cutout(np.full((40, 30, 3), c, np.uint8), np.ones((40, 30), bool)) for c in colours]
    black = np.zeros((128, 128, 3), np.uint8)
    own = np.zeros((1, 128, 128), bool)
    own[0, 10:100, 10:100] = True
    settings = CopyPasteSettings(size=128, photo_share=0.0, min_objects=4, max_objects=4, colour_gain=0, brightness=0)
    for index in range(10):
        made = make_composite(1, index, [AnnotatedPhoto(black, own)], [black], pieces, settings)
        pasted = made.masks[list(made.pasted)]
        assert pasted.sum(0).max() <= 1
        assert (made.masks.sum((1, 2)) >= settings.min_area).all()
        for mask, is_pasted in zip(made.masks, made.pasted):
            shown = {tuple(c) for c in made.image[mask]}
            assert len(shown) == 1 and (shown != {(0, 0, 0)}) == is_pasted
        if not all(made.pasted):  # the photo's own object lost what the pastes cover
            assert not (made.masks[made.pasted.index(False)] & pasted.any(0)).any()


def test_bad_settings_and_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scale_range"):
        CopyPasteSettings(scale_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="photo_share"):
        CopyPasteSettings(photo_share=1.5)
    with pytest.raises(CocoInstancesError, match="no JPEG or PNG photos"):
        load_sources([COCO], [str(tmp_path)])


def test_the_command_writes_a_release_of_composites(tmp_path, capsys):
    out = tmp_path / "release"
    args = ["--output", str(out), "--count", "3", "--seed", "2", "--size", "192", "--coco", *COCO]
    assert main([*args, "--backgrounds", SA1B_IMAGES, "--first-id", "500"]) == 0
    items = list(iter_release(str(out)))
    assert [i.record["image"]["image_id"] for i in items] == [500, 501, 502]
    assert all(i.record["image"]["source"] == f"copy-paste:2:{k}" for k, i in enumerate(items))
    assert all(
        isinstance(a["pasted"], bool) and a["predicted_iou"] is None for i in items for a in i.record["annotations"]
    )
    card = (out / "DATASET_CARD.md").read_text()
    assert "training split" in card and "do not allow publishing" in card
    assert "3 composites" in capsys.readouterr().out
    assert (
        main(["--output", str(tmp_path / "x"), "--count", "1", "--seed", "1", "--coco", "missing.json", COCO[1]]) == 2
    )
    assert "not a COCO instances file" in capsys.readouterr().err
