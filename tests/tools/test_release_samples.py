"""Training images streamed from a release: read lazily, not held, shuffled within a bounded
buffer, the same training as from a list in the same order; SA-1B records whose size disagrees
with their JPEG skipped, refused or rescaled."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.images import decode_image
from curation.record_size import RecordSizeError
from curation.release import iter_release
from sam_core.modeling.sam import Sam
from sam_core.training import NotEnoughImagesError, Trainer, TrainingImage, TrainSettings, prepare_training_image
from synthetic.scene_release import write_scene_release
from tests.sa1b_real import real_sa1b_item, with_width, write_sa1b_tar
from tests.sam_core.test_training import MICRO
from tools.release_samples import ReleaseSamples, interleaved, shuffled
from tools.train_sam import main

SIZE = MICRO.image_size


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release of 4 generated scenes, one per shard."""
    root = tmp_path_factory.mktemp("four") / "release"
    write_scene_release(str(root), count=4, seed=3, shard_size=1, first_id=0, workers=1)
    return root


@pytest.fixture()
def real_tars(tmp_path: Path) -> Path:
    """A folder with one SA-1B tar of two real records over real JPEGs; the first record's width
    is rewritten from 2000 to 1800."""
    folder = tmp_path / "tars"
    write_sa1b_tar(
        folder / "sa_000020.tar", [with_width(real_sa1b_item(0, n_masks=4), 1800), real_sa1b_item(1, n_masks=4)]
    )
    return folder


def test_the_first_images_are_read_without_reading_the_later_shards(four_shards: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.mkdir()
    (release / "shards").mkdir()
    for name in ("manifest.json", "_SUCCESS"):
        (release / name).write_bytes((four_shards / name).read_bytes())
    # the last of the four shards the manifest lists is missing
    for shard in ("sa_000000.tar", "sa_000001.tar", "sa_000002.tar"):
        (release / "shards" / shard).write_bytes((four_shards / "shards" / shard).read_bytes())

    in_order = iter(ReleaseSamples(str(release), SIZE))
    assert next(in_order).image.shape[:2] in ((64, 64), (48, 64), (64, 48), (44, 64), (64, 44))
    shuffling = iter(ReleaseSamples(str(release), SIZE, shuffle_buffer=2))
    next(shuffling)  # a buffer of two: its first image is handed over when the third arrives
    with pytest.raises(FileNotFoundError):
        list(in_order)


def test_a_pass_holds_no_image_it_has_handed_over(four_shards: Path) -> None:
    previous: weakref.ref[TrainingImage] | None = None
    still_held = []
    for image in ReleaseSamples(str(four_shards), SIZE, shuffle_buffer=3):
        gc.collect()
        still_held.append(previous is not None and previous() is not None)
        previous = weakref.ref(image)
    assert still_held == [False] * 4


def test_the_shuffle_buffer_is_bounded_seeded_and_a_permutation() -> None:
    read: list[int] = []

    def numbers() -> Iterator[int]:
        for k in range(100):
            read.append(k)
            yield k

    stream = shuffled(numbers(), 10, np.random.default_rng(5))
    first = next(stream)
    assert len(read) == 11  # ten held, the eleventh took the place of the one handed over
    order = [first, *stream]
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert list(shuffled(range(100), 10, np.random.default_rng(5))) == order
    assert list(shuffled(range(5), 1, np.random.default_rng(5))) == list(range(5))


def test_passes_are_shuffled_differently_and_reproducibly(four_shards: Path) -> None:
    def orders(seed: int) -> list[list[int]]:
        samples = ReleaseSamples(str(four_shards), SIZE, shuffle_buffer=4, seed=seed)
        return [[int(image.image.sum()) for image in samples] for _ in range(3)]

    first = orders(0)
    assert first == orders(0)
    assert all(sorted(p) == sorted(first[0]) for p in first) and len({tuple(p) for p in first}) > 1


def test_training_from_the_stream_equals_training_from_a_list_in_the_same_order(four_shards: Path) -> None:
    held = [
        prepare_training_image(
            decode_image(item.image_bytes), [a["segmentation"] for a in item.record["annotations"]], SIZE
        )
        for item in iter_release(str(four_shards))
    ]  # what the trainer was given before it streamed: every image decoded, in release order
    settings = TrainSettings(steps=3, images_per_step=3, masks_per_image=2, rounds=2, warmup_steps=1, log_every=3)

    def trained(images: Iterable[TrainingImage] | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = Sam(MICRO)
        if images is not None:  # 9 images: two passes over the four and one image of a third
            Trainer(model, images, settings).train()
        return model.state_dict()

    streamed, listed, initial = trained(ReleaseSamples(str(four_shards), SIZE)), trained(held), trained(None)
    assert all(torch.equal(streamed[k], listed[k]) for k in listed)
    assert not all(torch.equal(streamed[k], initial[k]) for k in initial)


def test_a_pass_shorter_than_a_step_is_refused(four_shards: Path) -> None:
    settings = TrainSettings(steps=1, images_per_step=3, masks_per_image=2, log_every=1)
    samples = ReleaseSamples(str(four_shards), SIZE, limit=2)
    with pytest.raises(NotEnoughImagesError, match="gave 2, fewer than images_per_step"):
        Trainer(Sam(MICRO), samples, settings).train()


def test_a_real_record_whose_width_disagrees_is_skipped_refused_or_rescaled(real_tars: Path) -> None:
    skipping = ReleaseSamples(str(real_tars), SIZE)
    assert [image.image.shape for image in skipping] == [(48, 64, 3)]
    assert (skipping.first_pass["size_mismatch"], skipping.first_pass["used"]) == (1, 1)
    assert "skipped 1 whose record's size disagrees with its JPEG" in skipping.summary()

    with pytest.raises(RecordSizeError, match="image 226381: its record says 1800x1500"):
        list(ReleaseSamples(str(real_tars), SIZE, on_size_mismatch="fail"))

    rescaling = ReleaseSamples(str(real_tars), SIZE, on_size_mismatch="rescale")
    assert [image.image.shape for image in rescaling] == [(48, 64, 3)] * 2
    assert (rescaling.first_pass["rescaled"], rescaling.first_pass["used"]) == (1, 2)


def test_the_command_line_skips_or_stops_at_the_real_mismatched_record(real_tars: Path, tmp_path: Path) -> None:
    short = ["--release", str(real_tars), "--image-size", "64", "--steps", "1", "--images-per-step", "1"]
    short += ["--masks-per-image", "2", "--log-every", "1", "--output", str(tmp_path / "models")]
    assert main([*short, "--on-size-mismatch", "fail"]) == 2
    assert not (tmp_path / "models").exists()
    assert main(short) == 0
    (saved,) = (tmp_path / "models").glob("*.json")
    assert json.loads(saved.read_text())["images"] == 1


def test_interleaving_mixes_sources_in_proportion_to_their_sizes() -> None:
    mixed = list(interleaved([iter("aaaaaa"), iter("bb"), iter("")], [6, 2, 1]))
    assert "".join(mixed) == "aaabaaab"  # each next item from the source furthest behind its share
    assert "".join(interleaved([iter("aa"), iter("bbbbbb")], [6, 6])) == "ababbbbb"  # one ending early drops out


def test_several_releases_are_read_side_by_side_and_mixed(four_shards: Path, tmp_path: Path) -> None:
    two = tmp_path / "two"
    write_scene_release(str(two), count=2, seed=8, shard_size=2, first_id=100, workers=1)
    mixed = ReleaseSamples([str(four_shards), str(two)], SIZE)
    sources = [int(image.image.sum()) for image in mixed]
    alone = [int(image.image.sum()) for image in ReleaseSamples(str(four_shards), SIZE)]
    other = [int(image.image.sum()) for image in ReleaseSamples(str(two), SIZE)]
    assert sources == [alone[0], alone[1], other[0], alone[2], alone[3], other[1]]
    assert mixed.images_per_pass == 6
    with pytest.raises(ValueError, match="a corrections folder is over one release"):
        ReleaseSamples([str(four_shards), str(two)], SIZE, corrections=str(tmp_path))


def test_mixing_needs_finished_releases(four_shards: Path, real_tars: Path, tmp_path: Path) -> None:
    short = ["--release", str(four_shards), "--release", str(real_tars), "--image-size", "64", "--steps", "1"]
    short += ["--images-per-step", "1", "--masks-per-image", "1", "--output", str(tmp_path / "models")]
    assert main(short) == 2
