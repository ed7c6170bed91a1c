"""The job's stages called directly, without Ray, on real photos and a zoo of bad files."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.embeddings import read_embeddings_file
from curation.filters import QualityFilters
from curation.inputs import plan_inputs
from curation.job_plan import SavedPlan, load_or_create_plan
from curation.records import MASK_ID_STRIDE
from curation.release import ReleaseWriter, ShardCommit, iter_release
from curation.release_images import ReleaseImagePolicy
from pipelines.amg import NO_DROPS, JobError, id_blocks, pending_ids
from pipelines.amg_config import JobConfig
from pipelines.amg_stages import (
    MaskStage,
    load_images,
    make_records,
    read_plan_rows,
    release_embedding_info,
    write_shard,
)
from sam_core.checkpoints import bundled_checkpoint, file_sha256
from sam_core.mask_ops import decode_rle
from tests.conftest import COCO_PEOPLE
from tests.pipelines.conftest import FAST_GENERATOR, released_names


def test_stages_release_every_good_image_and_record_every_bad_one(zoo, tmp_path):
    config = JobConfig(input=str(zoo["manifest"]), output=str(tmp_path / "out"), generator=FAST_GENERATOR)
    writer = ReleaseWriter(config.output)
    plan, _ = load_or_create_plan(writer, {"input": config.input}, lambda f: plan_inputs(config.input).write(f, 4))
    blocks = id_blocks(plan, pending_ids(plan, []), NO_DROPS)  # a block per row group of 4 inputs
    rows = pa.concat_tables(read_plan_rows(block, plan) for block in blocks).to_pydict()
    n = len(rows["uri"])
    assert len(blocks) == -(-n // 4) and rows["image_id"] == list(range(n)) and set(rows["stage"]) == {""}
    batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
    batch["image_id"] = np.array(rows["image_id"])

    policy = ReleaseImagePolicy(short_side=160, jpeg_quality=90, deidentify=False, min_side=32, max_pixels=10**8)
    loaded = load_images(batch, {}, policy, model_long_side=320)
    sha = file_sha256(bundled_checkpoint("sae_tiny"))
    settings = config.generator_settings()
    stage = MaskStage("sae_tiny", "sae_tiny", sha, settings, config.inference_options(), "cpu")
    masked = stage(loaded)
    assert "model_image" not in masked
    assert masked["embedding"].dtype == np.float16 and masked["embedding"].shape == (n, 384)
    info = release_embedding_info("sae_tiny", sha)
    finished = make_records(masked, settings, QualityFilters())
    summary = write_shard(finished, config.output, {}, plan.metadata, embedding_info=info)

    records = [item.record for item in iter_release(str(tmp_path / "out" / "shards"))]
    assert released_names(records) == zoo["released"]
    assert int(summary["n_images"][0]) == len(records) and int(summary["n_failed"][0]) == len(zoo["failed"])
    failures = pq.read_table(tmp_path / "out" / "failures").to_pylist()
    assert {f["uri"].rsplit("/", 1)[1]: f["stage"] for f in failures} == zoo["failed"]
    reasons = {f["uri"].rsplit("/", 1)[1]: f["error"] for f in failures}
    assert "exceeds the limit" in reasons["bomb.png"] and "minimum side" in reasons["tiny.png"]
    assert "empty file" in reasons["empty.jpg"] and "FileNotFoundError" in reasons["missing.jpg"]
    for record in records:
        image = record["image"]
        assert min(image["width"], image["height"]) <= 160 and image["country"] == "NZ"
        assert len(image["source_sha256"]) == 64
        for ann in record["annotations"]:
            assert decode_rle(ann["segmentation"]).shape == (image["height"], image["width"])
    assert sum(len(r["annotations"]) for r in records) >= 2 * len(records)
    ids = sorted([r["image"]["image_id"] for r in records] + [f["image_id"] for f in failures])
    assert ids == list(range(n)) and summary["shard"][0] == "sa_000000"
    for record in records:  # release-wide annotation ids: the image's id, then the mask's place
        first = record["image"]["image_id"] * MASK_ID_STRIDE
        assert [a["id"] for a in record["annotations"]] == list(range(first, first + len(record["annotations"])))
    index = pq.read_table(tmp_path / "out" / "index" / "images")
    assert index.schema.field("country").type == pa.string() and set(index["country"].to_pylist()) == {"NZ"}
    embeddings = read_embeddings_file(str(tmp_path / "out" / "embeddings" / "sa_000000.parquet"))
    assert embeddings.info == info and embeddings.info["checkpoint_sha256"] == sha
    assert embeddings.image_ids.tolist() == [r["image"]["image_id"] for r in records]
    np.testing.assert_array_equal(embeddings.vectors, masked["embedding"][embeddings.image_ids])


def test_an_image_the_generator_refuses_fails_alone(shared_image_paths):
    """The batch is proposed together; when one image makes that raise, the others still get masks."""
    config = JobConfig(input="unused", output="unused", generator=FAST_GENERATOR)
    sha = file_sha256(bundled_checkpoint("sae_tiny"))
    stage = MaskStage("sae_tiny", "sae_tiny", sha, config.generator_settings(), config.inference_options(), "cpu")
    photos = [np.asarray(Image.open(p).convert("RGB").resize((320, 240))) for p in shared_image_paths[:2]]
    refused = np.full((64, 64, 3), 7.5, dtype=np.float32)  # float images must lie in [0, 1]
    column = np.empty(3, dtype=object)
    for i, image in enumerate([photos[0], refused, photos[1]]):
        column[i] = image
    empty = np.array([""] * 3, dtype=object)
    out = stage({"model_image": column, "stage": empty, "error": empty.copy()})

    assert list(out["stage"]) == ["", "generate", ""] and "[0, 1]" in out["error"][1]
    norms = np.linalg.norm(out["embedding"].astype(np.float32), axis=1)
    assert norms[1] == 0 and np.allclose(norms[[0, 2]], 1, atol=1e-2)  # zeros for the image that failed
    alone = [stage.generator.propose([photo])[0] for photo in photos]
    assert [json.loads(out["annotations"][i]) for i in (0, 2)] == json.loads(json.dumps(alone))
    assert all(alone) and json.loads(out["annotations"][1]) == []


def test_the_regions_blurred_reach_the_record_and_the_index(tmp_path):
    """load_images -> make_records -> write_shard on a COCO photo of three people; the model step
    is replaced by its output for an image without masks."""
    photo = COCO_PEOPLE
    batch = {
        "uri": np.array([str(photo)], dtype=object),
        "image_id": np.array([5]),
        "metadata": np.array(["{}"], dtype=object),
        "stage": np.array([""], dtype=object),
        "error": np.array([""], dtype=object),
    }
    policy = ReleaseImagePolicy(short_side=770, jpeg_quality=90, deidentify=True, min_side=32, max_pixels=10**8)
    loaded = load_images(batch, {}, policy, model_long_side=320)
    regions = json.loads(loaded["blurred_regions"][0])
    assert regions and {r["kind"] for r in regions} == {"face"} and int(loaded["blurred_faces"][0]) == len(regions)
    masked = {k: v for k, v in loaded.items() if k != "model_image"} | {"annotations": np.array(["[]"], dtype=object)}
    settings = JobConfig(input="unused", output="unused").generator_settings()
    write_shard(make_records(masked, settings, QualityFilters()), str(tmp_path / "out"), {}, pa.schema([]))

    (record,) = [item.record for item in iter_release(str(tmp_path / "out" / "shards"))]
    assert record["image"]["blurred_regions"] == regions and record["image"]["blurred_faces"] == len(regions)
    index = pq.read_table(tmp_path / "out" / "index" / "images").to_pylist()
    assert json.loads(index[0]["blurred_regions"]) == regions


def _saved_plan(tmp_path) -> SavedPlan:
    """Five inputs, ids 10 to 14, in row groups of two."""
    pq.write_table(pa.table({"uri": [f"s3://b/{i}.jpg" for i in range(5)]}), tmp_path / "inputs.parquet")
    writer = ReleaseWriter(str(tmp_path / "out"))
    write = plan_inputs(str(tmp_path / "inputs.parquet"), first_id=10).write
    return load_or_create_plan(writer, {"input": "x"}, lambda f: write(f, 2))[0]


def test_the_blocks_of_a_resumed_plan_hold_its_pending_ids_by_row_group(tmp_path):
    plan = _saved_plan(tmp_path)
    commits = [ShardCommit("sa_000010", None, [10, 11], 2), ShardCommit("sa_000014", None, [14], 1)]
    pending = pending_ids(plan, commits)
    assert pending.tolist() == [12, 13]
    dropped = pa.table({"image_id": [11, 13], "error": ["near-duplicate of a", "near-duplicate of b"]})
    (block,) = id_blocks(plan, pending, dropped)  # the first and last row groups are done
    assert read_plan_rows(block, plan).to_pylist() == [
        {"image_id": 12, "stage": "", "error": "", "uri": "s3://b/2.jpg", "metadata": "{}"},
        {"image_id": 13, "stage": "dedup", "error": "near-duplicate of b", "uri": "s3://b/3.jpg", "metadata": "{}"},
    ]
    with pytest.raises(JobError, match=r"image ids \[11\] are in more than one committed shard"):
        pending_ids(plan, [*commits, ShardCommit("sa_000011", None, [11], 1)])
