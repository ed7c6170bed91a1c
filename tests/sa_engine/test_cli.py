"""The `sa-engine` console command: the installed script, every subcommand and its help, --version,
the same flag names everywhere, and one error style (one line `error: ...`, exit status 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sa_engine.cli import SUBCOMMANDS, main
from sam_core.version import engine_version

SCRIPT = Path(sys.executable).parent / "sa-engine"
"""Where `pip install -e .` puts the console script: beside the interpreter."""
ASKED_FOR = {"amg", "dedup", "report", "audit", "fairness", "sa1b-index", "train", "evaluate", "demo"}
MIAP_INPUTS = ["--miap-boxes", "{missing}", "--masks", "{missing}", "--images", "{tmp}", "--mask-dir", "{tmp}"]
"""fairness's inputs, its CSVs missing ({missing}, {tmp}: filled in by the test)."""
HELPS = [(name,) for name in SUBCOMMANDS] + [("audit", "export"), ("audit", "score")]


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=300)


def _help(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _entries(help: str) -> dict[str, str]:
    """Each flag's entry of the help's options section (its lines joined), by its first flag."""
    options = help[help.index("\noptions:\n") :]
    entries = re.split(r"\n(?=  -)", options)[1:]
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def test_the_installed_script_lists_every_subcommand():
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: pip install -e . makes it"
    done = _script("--help")
    assert done.returncode == 0, done.stderr
    listed = re.search(r"\{([\w,-]+)\}", done.stdout).group(1).split(",")
    assert listed == list(SUBCOMMANDS) and ASKED_FOR <= set(listed)
    for name, subcommand in SUBCOMMANDS.items():
        assert re.search(
            rf"^ +{re.escape(name)} +{re.escape(subcommand.summary.split()[0])}", done.stdout, re.MULTILINE
        )


def test_version_prints_the_installed_version_and_the_commit():
    assert engine_version() != "unknown"  # the distribution is installed
    done = _script("--version")
    assert done.returncode == 0
    assert re.fullmatch(
        rf"sa-engine {re.escape(engine_version())} \(commit ([0-9a-f]{{40}}(-dirty)?|unknown)\)\n", done.stdout
    ), done.stdout


@pytest.mark.parametrize("words", HELPS, ids=" ".join)
def test_each_help_shows_each_default_once_and_no_out_flag(capsys, words):
    help = _help(capsys, *words)
    assert help.startswith(f"usage: sa-engine {' '.join(words)} ")
    assert not re.search(r"--out\b", help)
    entries = _entries(help)
    assert entries, help
    for flag, entry in entries.items():
        assert len(re.findall(r"\bdefault\b", entry)) <= 1, f"{flag}: {entry}"


@pytest.mark.parametrize(
    ("words", "flag", "shown"),
    [
        (
            ("amg",),
            "--model",
            "--model {sae_tiny,sam2.1_hiera_b+,sam2.1_hiera_l,sam2.1_hiera_s,sam2.1_hiera_t,vit_b,vit_h,vit_l}",
        ),
        (("amg",), "--preset", "--preset {official,sa1b,sam2}"),
        (("amg",), "--preset", "(default: sa1b)"),
        (("amg",), "--device", "--device {auto,cpu,cuda}"),
        (("amg",), "--encoder-precision", "{auto,float32,bfloat16,float16}"),
        (
            ("amg",),
            "--shard-size",
            "Most images per tar shard (the last shards of a run may hold fewer). (default: 1000)",
        ),
        (("dedup",), "--max-distance", "(default: 9)"),
        (("report",), "--concavity-sample", "(default: "),
        (("audit", "export"), "--n", "(default: 500)"),
        (("audit", "export"), "--on-size-mismatch", "{fail,rescale}"),
        (("train",), "--on-size-mismatch", "{skip,fail,rescale}"),
        (("train",), "--steps", "(default: 2000)"),
        (("train",), "--rounds", "correction points"),
        (("evaluate",), "--model", "{sae_tiny,vit_b,vit_h,vit_l}"),
        (
            ("fairness",),
            "--model",
            "{sae_tiny,sam2.1_hiera_b+,sam2.1_hiera_l,sam2.1_hiera_s,sam2.1_hiera_t,vit_b,vit_h,vit_l}",
        ),
        (("demo",), "--model", "(default: sae_tiny)"),
        (("scenes",), "--shard-size", "(default: 500)"),
    ],
)
def test_help_shows_allowed_values_and_defaults(capsys, words, flag, shown):
    entry = _entries(_help(capsys, *words))[flag]
    assert shown in entry, entry


@pytest.mark.parametrize(
    ("flag", "subcommands"),
    [
        ("--output", [w for w in HELPS if w not in {("audit",), ("evaluate",), ("verify",), ("review",)}]),
        (
            "--model",
            [
                ("amg",),
                ("train",),
                ("evaluate",),
                ("fairness",),
                ("demo",),
                ("average",),
                ("resample",),
                ("review",),
                ("embed",),
            ],
        ),
        ("--checkpoint", [("amg",), ("train",), ("evaluate",), ("fairness",), ("demo",), ("review",), ("embed",)]),
        (
            "--storage-options",
            [
                ("amg",),
                ("dedup",),
                ("report",),
                ("audit", "export"),
                ("sa1b-index",),
                ("verify",),
                ("review",),
                ("embed",),
            ],
        ),
    ],
)
def test_the_same_thing_has_the_same_flag(capsys, flag, subcommands):
    missing = [" ".join(words) for words in subcommands if flag not in _entries(_help(capsys, *words))]
    assert not missing, f"{flag} missing from {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--release", "{missing}", "--output", "{tmp}/report"],
        ["audit", "export", "--release", "{missing}", "--output", "{tmp}/audit"],
        ["audit", "score", "--exported", "{missing}", "--corrected", "{missing}", "--output", "{tmp}/audit"],
        ["sa1b-index", "--tars", "{missing}", "--output", "{tmp}/index"],
        ["evaluate", "--release", "{missing}"],
        ["train", "--release", "{missing}", "--output", "{tmp}/models", "--steps", "1"],
        ["demo", "--image", "{missing}", "--output", "{tmp}/demo.png"],
        ["average", "{missing}", "{missing}", "--output", "{tmp}/avg"],
        ["resample", "{missing}", "--output", "{tmp}/m"],
        ["amg", "--config", "{missing}", "--input", "{tmp}", "--output", "{tmp}/release"],
        ["fairness", *MIAP_INPUTS, "--output", "{tmp}/fairness"],
        ["review", "--release", "{missing}", "--images", "1", "--corrections", "{tmp}/corrections"],
        ["embed", "--release", "{missing}", "--output", "{tmp}/embeddings"],
    ],
    ids=lambda argv: " ".join(w for w in argv[:2] if not w.startswith("-")),
)
def test_a_missing_input_is_one_error_line_and_exit_2(capsys, tmp_path, argv):
    missing = tmp_path / "no_such_thing"
    status = _exit_status([arg.format(missing=missing, tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1 and str(missing) in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--release", "r", "--output", "o", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["report", "--release", "r", "--out", "o"], "error: the following arguments are required: --output"),
        (["amg", "--input", "i", "--output", "o", "--model", "vit_z"], "error: argument --model: invalid choice"),
        (["scenes", "--output", "o", "--count", "0", "--seed", "1"], "error: count and shard_size must be >= 1"),
        (["copy-paste", "--output", "o", "--count", "0", "--seed", "1", "--coco", "a", "b"], "error: count and shard_"),
        (
            ["copy-paste", "--output", "o", "--count", "1", "--seed", "1", "--coco", "a", "b", "--size", "8"],
            "error: invalid CopyPaste",
        ),
        (["bogus"], "error: argument command: invalid choice: 'bogus'"),
        ([], "error: the following arguments are required: command"),
    ],
)
def test_a_bad_argument_is_one_error_line_and_exit_2(capsys, argv, message):
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
