"""`sa-engine embed`: embeddings for a release made without them, under another prefix, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.embeddings import embedding_info, embeddings_table, read_embeddings
from curation.images import decode_image
from curation.release import iter_release
from sam_core.checkpoints import load_sam
from sam_core.pooled_embedding import POOLING, embed_images
from synthetic.scene_release import write_scene_release
from tools.embed_release import main

COUNT, SHARD_SIZE = 5, 2


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A release of 5 generated scenes in 3 shards, made without embeddings."""
    prefix = str(tmp_path_factory.mktemp("embed") / "release")
    write_scene_release(prefix, count=COUNT, seed=3, shard_size=SHARD_SIZE, first_id=0, workers=1)
    return prefix


def test_embeds_every_image_as_the_job_pools_it_and_resumes(release, tmp_path, capsys):
    out = tmp_path / "embeddings"
    assert main(["--release", release, "--output", str(out), "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count(" images embedded | ") == 3 and f"done: {COUNT} images in 3 shards -> {out}" in err
    assert (out / "_SUCCESS").exists() and (out / "embeddings.json").exists()

    found = read_embeddings(release, embeddings=str(out))
    model = load_sam("sae_tiny", "sae_tiny")
    items = list(iter_release(release))
    assert found.image_ids.tolist() == [item.record["image"]["image_id"] for item in items]
    expected = embed_images(model, [decode_image(item.image_bytes) for item in items])
    np.testing.assert_allclose(found.vectors.astype(np.float32), expected.astype(np.float32), atol=2e-3)
    assert found.info["model"] == "sae_tiny" and found.info["pooling"] == POOLING and found.info["dim"] == 384
    assert len(found.info["checkpoint_sha256"]) == 64

    # a run that stopped after its first shard: the rest is written, the first left as it was
    files = sorted((out / "embeddings").glob("*.parquet"))
    kept = files[0].stat().st_mtime_ns
    for path in files[1:]:
        path.unlink()
    (out / "_SUCCESS").unlink()
    assert main(["--release", release, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("already written, skipped") == 1 and err.count(" images embedded | ") == 2
    assert files[0].stat().st_mtime_ns == kept and (out / "_SUCCESS").exists()
    again = read_embeddings(release, embeddings=str(out))
    np.testing.assert_array_equal(again.vectors, found.vectors)


def test_an_output_made_with_another_model_is_refused(release, tmp_path, capsys):
    out = tmp_path / "embeddings"
    (out / "embeddings").mkdir(parents=True)
    first = pq.read_table(Path(release) / "index" / "images" / "sa_000000.parquet")["image_id"].to_numpy()
    other = embedding_info("vit_b", "cd" * 32, POOLING, 2)
    vectors = np.tile([[1.0, 0.0]], (len(first), 1))
    pq.write_table(embeddings_table(first, vectors, other), out / "embeddings" / "sa_000000.parquet")
    assert main(["--release", release, "--output", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert (
        len(errors) == 1 and "embeddings/sa_000000.parquet in the output was made with {'model': 'vit_b'" in errors[0]
    )
    assert not (out / "_SUCCESS").exists()


def test_a_missing_release_or_a_bad_flag_is_one_error_line(tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert main(["--release", str(missing), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {missing} is not a finished release: _SUCCESS is missing\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", str(missing), "--output", str(tmp_path / "out"), "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --batch-size must be >= 1, got 0\n"
