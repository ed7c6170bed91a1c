"""`python -m analysis.review` (and `sa-engine review`): served on loopback until interrupted, a
warning for any other address, and a release it cannot read as one error line and exit status 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from analysis.audit import sample_images
from analysis.release_index import ReleaseIndex
from analysis.review.__main__ import main
from analysis.review.catalog import Catalog
from analysis.review.server import bind_warning
from curation.corrections import FORMAT
from sa_engine.cli import main as sa_engine
from tests.conftest import REPO


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    ("release", "shown"),
    [
        ("{tmp}/no_such_release", "{tmp}/no_such_release"),
        ("{tmp}", "not a finished release"),  # a folder, but not a release
        ("nosuchprotocol://bucket/release", "nosuchprotocol"),
    ],
)
def test_a_release_it_cannot_read_stops_it_with_one_error_line(capsys, tmp_path, release, shown):
    argv = ["--release", release.format(tmp=tmp_path), "--images", "1", "--corrections", str(tmp_path / "c")]
    assert _exit_status(argv) == 2
    assert shown.format(tmp=tmp_path) in _one_error_line(capsys)
    assert not (tmp_path / "c").exists()


def test_ids_the_release_does_not_hold_stop_it_with_one_error_line(capsys, tmp_path, review_release):
    argv = ["--release", review_release.uri, "--images", "1", "77", "--corrections", str(tmp_path / "c")]
    assert _exit_status(argv) == 2
    assert "[77] are not in the release" in _one_error_line(capsys)


def test_a_corrections_folder_of_another_release_stops_it(capsys, tmp_path, review_release):
    header = {"format": FORMAT, "release": "s3://other", "model": {"name": "sae_tiny", "sha256": "0" * 64}}
    (tmp_path / "corrections.json").write_text(json.dumps(header))
    argv = ["--release", review_release.uri, "--images", "1", "--corrections", str(tmp_path)]
    assert _exit_status(argv) == 2
    assert "holds corrections of release 's3://other'" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--sample", "0"], "--sample must be >= 1"), (["--sample", "1", "--images", "1"], "not allowed with")],
)
def test_a_bad_choice_of_images_is_a_usage_error(capsys, tmp_path, argv, message):
    assert _exit_status(["--release", str(tmp_path), "--corrections", str(tmp_path), *argv]) == 2
    assert message in _one_error_line(capsys)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_is_served_without_a_warning(host):
    assert bind_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "review.example.org"])
def test_any_other_address_is_warned_about(host):
    assert "anyone who can reach it can read the release and write corrections" in bind_warning(host)


def test_the_command_line_serves_a_sample_until_interrupted(tmp_path, review_release):
    argv = [sys.executable, "-m", "analysis.review", "--release", review_release.uri, "--sample", "2"]
    argv += ["--corrections", str(tmp_path / "c"), "--port", "0", "--cache-dir", str(tmp_path / "e")]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("review: http://127.0.0.1:"), process.stderr.read()
        url = line.split()[1]
        assert line.rstrip().endswith(f"(2 images, corrections -> {tmp_path / 'c'})")
        with urllib.request.urlopen(url + "api/images", timeout=60) as response:
            images = json.loads(response.read())["images"]
        assert len(images) == 2 and {row["image_id"] for row in images} <= set(review_release.records)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        process.stdout.close()
        process.stderr.close()


def test_sa_engine_review_is_the_same_command(capsys):
    with pytest.raises(SystemExit):
        sa_engine(["review", "--help"])
    assert capsys.readouterr().out.startswith("usage: sa-engine review ")


def test_the_sample_is_the_audit_exports_sample(review_release):
    catalog = Catalog.open(review_release.uri, sample=2, seed=5)
    assert catalog.ids() == sample_images(ReleaseIndex(review_release.uri), 2, 5)
