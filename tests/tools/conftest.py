"""A small release of generated scenes for the training and evaluation command lines."""

from __future__ import annotations

import pytest

from synthetic.scene_release import write_scene_release

SCENE_COUNT = 3


@pytest.fixture(scope="session")
def scene_release(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A release of SCENE_COUNT generated scenes with ground-truth masks, for training and evaluation."""
    prefix = str(tmp_path_factory.mktemp("scenes") / "release")
    write_scene_release(prefix, count=SCENE_COUNT, seed=9, shard_size=SCENE_COUNT, first_id=0, workers=1)
    return prefix
