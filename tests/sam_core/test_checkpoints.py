"""Checkpoint registry, verified fetching into the cache, and strict, safe loading."""

import functools
import hashlib
import http.server
import pickle
import threading
from dataclasses import replace

import fsspec
import pytest
import torch

from parity.models import TINY, randomize
from sam_core import OFFICIAL_CHECKPOINTS, CheckpointError, load_sam
from sam_core.checkpoints import fetch_checkpoint, file_sha256, resample_position_tables
from sam_core.modeling.sam import Sam


def test_registry_names_the_official_files_with_their_checksums():
    assert {k: (v.file_name, v.sha256_prefix) for k, v in OFFICIAL_CHECKPOINTS.items()} == {
        "vit_h": ("sam_vit_h_4b8939.pth", "4b8939"),
        "vit_l": ("sam_vit_l_0b3195.pth", "0b3195"),
        "vit_b": ("sam_vit_b_01ec64.pth", "01ec64"),
        # SAM 2.1 (2024-09-28): the file names carry no checksum; the full sha256 is in the registry.
        "sam2.1_hiera_t": ("sam2.1_hiera_tiny.pt", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        "sam2.1_hiera_s": ("sam2.1_hiera_small.pt", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        "sam2.1_hiera_b+": (
            "sam2.1_hiera_base_plus.pt",
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        ),
        "sam2.1_hiera_l": ("sam2.1_hiera_large.pt", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    }
    for spec in OFFICIAL_CHECKPOINTS.values():
        folder = "segment_anything_2/092824" if spec.model_type.startswith("sam2") else "segment_anything"
        assert spec.url == f"https://dl.fbaipublicfiles.com/{folder}/{spec.file_name}"


@pytest.fixture(scope="module")
def tiny_weights():
    model = load_sam(TINY)
    randomize(model, seed=11)
    return model.state_dict()


@pytest.fixture()
def checkpoint(tmp_path, tiny_weights):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_weights, path)
    return path


def _same_weights(model, state_dict):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state_dict.items())


def test_local_checkpoint_round_trip(checkpoint, tiny_weights):
    model = load_sam(TINY, checkpoint)
    assert not model.training
    assert _same_weights(model, tiny_weights)


def test_checksum_in_an_official_style_name_is_checked(tmp_path, checkpoint, tiny_weights):
    digest = file_sha256(checkpoint)
    good = tmp_path / f"sam_tiny_{digest[:6]}.pth"
    good.write_bytes(checkpoint.read_bytes())
    assert _same_weights(load_sam(TINY, good), tiny_weights)

    wrong_prefix = "000000" if not digest.startswith("000000") else "111111"
    bad = tmp_path / f"sam_tiny_{wrong_prefix}.pth"
    bad.write_bytes(checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match=rf"{bad}.*sha256 {digest} does not match the expected {wrong_prefix}"):
        load_sam(TINY, bad)
    with pytest.raises(CheckpointError, match="does not match the expected"):
        load_sam(TINY, checkpoint, expected_sha256="f" * 64)


def test_wrong_architecture_lists_missing_unexpected_and_mismatched_keys(checkpoint):
    with pytest.raises(CheckpointError) as caught:
        load_sam("vit_b", checkpoint)
    message = str(caught.value)
    assert str(checkpoint) in message and "vit_b architecture" in message
    assert "missing keys (112): image_encoder.blocks.10." in message  # vit_b has 12 blocks of 14 keys, TINY 4
    assert "shape mismatches (60): " in message
    assert "image_encoder.blocks.0.attn.qkv.weight: checkpoint (192, 64) vs model (2304, 768)" in message
    assert "... and 50 more" in message

    state_dict = torch.load(checkpoint, weights_only=True)
    state_dict["extra.weight"] = torch.zeros(1)
    torch.save(state_dict, checkpoint)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra.weight"):
        load_sam(TINY, checkpoint)


def test_weights_of_another_input_size_load_only_with_resampled_position_tables(checkpoint, tiny_weights):
    larger = replace(TINY, image_size=2 * TINY.image_size)  # a 32x32 patch grid instead of 16x16
    with pytest.raises(CheckpointError, match=r"image_encoder.pos_embed: checkpoint \(1, 16, 16, 64\) vs model"):
        load_sam(larger, checkpoint)

    loaded = load_sam(larger, checkpoint, resample_positions=True).state_dict()
    resampled = {k for k, v in tiny_weights.items() if v.shape != loaded[k].shape}
    global_tables = {f"image_encoder.blocks.{i}.attn.rel_pos_{axis}" for i in (1, 3) for axis in "hw"}
    assert resampled == {"image_encoder.pos_embed"} | global_tables  # windowed blocks keep theirs
    assert all(torch.equal(loaded[k], v) for k, v in tiny_weights.items() if k not in resampled)
    assert loaded["image_encoder.pos_embed"].shape == (1, 32, 32, 64)
    assert all(loaded[k].shape == (63, 16) for k in global_tables)

    # Interpolation keeps what does not vary: a constant embedding stays that constant.
    constant = dict(tiny_weights, **{"image_encoder.pos_embed": torch.full((1, 16, 16, 64), 0.25)})
    model = Sam(larger)
    grid = resample_position_tables(constant, model)["image_encoder.pos_embed"]
    assert torch.allclose(grid, torch.full((1, 32, 32, 64), 0.25))
    model.load_state_dict(loaded)
    with torch.no_grad():
        assert model.image_encoder(torch.zeros(1, 3, 512, 512)).shape == (1, TINY.prompt_embed_dim, 32, 32)


def test_truncated_file_is_named(checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {checkpoint} cannot be read.*truncated"):
        load_sam(TINY, checkpoint)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pth does not exist"):
        load_sam(TINY, tmp_path / "nowhere.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickles_that_run_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"image_encoder.pos_embed": _RunsCode()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_sam(TINY, path)
    assert "this pickle ran code" not in capsys.readouterr().out


def test_non_tensor_content_is_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        load_sam(TINY, path)


def test_fsspec_url_is_fetched_once_into_the_cache(tmp_path, checkpoint, tiny_weights):
    data = checkpoint.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    url = f"memory://models/sam_tiny_{digest[:8]}.pth"
    with fsspec.open(url, "wb") as f:
        f.write(data)
    cache = tmp_path / "cache"

    model = load_sam(TINY, url, cache_dir=cache)
    assert _same_weights(model, tiny_weights)
    assert [p.name for p in cache.iterdir()] == [f"sam_tiny_{digest[:8]}.pth"]

    fsspec.filesystem("memory").rm(url)  # the second load must come from the cache alone
    assert fetch_checkpoint(url, cache_dir=cache) == cache / f"sam_tiny_{digest[:8]}.pth"


def test_a_corrupt_download_leaves_nothing_in_the_cache(tmp_path, checkpoint):
    url = "memory://models/sam_tiny_abcdef12.pth"  # the name promises a checksum the bytes do not have
    with fsspec.open(url, "wb") as f:
        f.write(checkpoint.read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="does not match the expected abcdef12"):
        fetch_checkpoint(url, cache_dir=cache)
    assert list(cache.iterdir()) == []


@pytest.fixture()
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www, stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_url_with_expected_sha256(tmp_path, http_server, checkpoint, tiny_weights):
    root, base = http_server
    (root / "tiny.pth").write_bytes(checkpoint.read_bytes())
    digest = file_sha256(checkpoint)
    model = load_sam(TINY, f"{base}/tiny.pth", cache_dir=tmp_path / "cache", expected_sha256=digest)
    assert _same_weights(model, tiny_weights)
    assert (tmp_path / "cache" / "tiny.pth").is_file()
