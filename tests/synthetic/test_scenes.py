import numpy as np
import pytest

from sam_core.mask_ops import decode_rle
from synthetic.scenes import SceneSettings, generate_scene


def test_a_scene_is_the_same_every_time_and_differs_from_its_neighbours():
    first, again, other = generate_scene(7, 3), generate_scene(7, 3), generate_scene(7, 4)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.masks, again.masks)
    assert first.kinds == again.kinds
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("index", range(12))
def test_masks_are_exact_visible_regions(index):
    settings = SceneSettings()
    scene = generate_scene(11, index, settings)
    h, w = scene.image.shape[:2]
    assert scene.image.dtype == np.uint8 and scene.image.shape == (h, w, 3)
    assert scene.masks.shape == (len(scene.kinds), h, w) and scene.masks.dtype == bool
    assert (scene.masks.sum((1, 2)) >= settings.min_visible_area).all()
    top = [i for i, parent in enumerate(scene.parents) if parent == -1]
    # Objects occlude each other: visible regions of different objects never overlap.
    coverage = scene.masks[top].sum(0)
    assert coverage.max() <= 1
    # A part lies inside the piece it belongs to.
    for i, parent in enumerate(scene.parents):
        if parent != -1:
            assert parent < i and ":" in scene.kinds[i]
            assert not (scene.masks[i] & ~scene.masks[parent]).any()


def test_scenes_cover_every_shape_kind_and_composite_objects():
    kinds = [k for i in range(40) for k in generate_scene(2, i).kinds]
    for kind in ("ellipse", "polygon", "blob", "thin", "small"):
        assert kind in kinds
    assert any(k.endswith(":part") for k in kinds) and any(k.endswith(":subpart") for k in kinds)


def test_inside_a_mask_the_image_shows_the_object_not_the_background():
    # Without pixel noise, a flat-filled background differs from an object's fill inside its
    # visible region: so the region really is where the object was painted.
    scene = generate_scene(3, 5, SceneSettings(pixel_noise=0.0, clutter_marks=(0, 1)))
    background = ~scene.masks.any(0)
    colours = {tuple(c) for c in scene.image[background][:50]}
    for mask in scene.masks:
        inside = {tuple(c) for c in scene.image[mask][:50]}
        assert inside - colours  # some pixel colour inside is not one of the background's


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_objects"):
        SceneSettings(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="part_probability"):
        SceneSettings(part_probability=1.5)


def test_scene_release_round_trips_masks_exactly(tmp_path):
    from curation.release import iter_release, read_manifest
    from synthetic.scene_release import write_scene_release

    manifest = write_scene_release(str(tmp_path / "rel"), count=5, seed=4, shard_size=2, first_id=100, workers=1)
    assert manifest["n_images"] == 5 and len(manifest["shards"]) == 3
    assert read_manifest(str(tmp_path / "rel"))["n_masks"] == manifest["n_masks"]
    items = list(iter_release(str(tmp_path / "rel")))
    assert [i.record["image"]["image_id"] for i in items] == [100, 101, 102, 103, 104]
    for index, item in enumerate(items):
        scene = generate_scene(4, index)
        decoded = np.stack([decode_rle(a["segmentation"]) for a in item.record["annotations"]])
        np.testing.assert_array_equal(decoded, scene.masks)
        for ann, mask in zip(item.record["annotations"], scene.masks):
            assert ann["area"] == mask.sum()
            x, y = ann["point_coords"][0]
            assert mask[int(y), int(x)]
            assert ann["predicted_iou"] is None and ann["stability_score"] is None
