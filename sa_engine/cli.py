"""`sa-engine <subcommand> ...`: one console command over every command line of the project.

Each subcommand is its module's own command line (its parser and `main`, which also sets up
logging), imported only when it runs, so that `sa-engine --help` starts no torch and no Ray.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from sam_core.command_line import PROG, CommandParser
from sam_core.version import engine_commit, engine_version


class Subcommand(NamedTuple):
    module: str
    """The module whose `main(argv)` runs the subcommand (also `python -m <module>`)."""
    summary: str


SUBCOMMANDS = {
    "amg": Subcommand("pipelines.amg", "the main Ray job: images to an SA-1B-style release"),
    "dedup": Subcommand("pipelines.dedup", "the near-duplicate Ray job: a keep/drop table for amg --dedup-table"),
    "semdedup": Subcommand("pipelines.semdedup", "SemDeDup over a release's embeddings: a keep/drop table"),
    "verify": Subcommand("curation.verify", "check a release: checksums, indexes, records, every input once"),
    "embed": Subcommand("tools.embed_release", "image embeddings for a release made before the job stored them"),
    "report": Subcommand("analysis.report", "one HTML report over a release: the paper's sections 5-6"),
    "audit": Subcommand("analysis.audit", "the mask quality audit: export a sample, score its corrections"),
    "review": Subcommand("analysis.review.__main__", "review, correct and add masks in the browser, with SAM's help"),
    "fairness": Subcommand("analysis.fairness", "fairness in segmenting people, on MIAP (the paper's Table 2)"),
    "sa1b-index": Subcommand("analysis.sa1b_index", "index SA-1B's tar files as a release, for the analyses"),
    "scenes": Subcommand("synthetic.scene_release", "generated training scenes, written as a release"),
    "copy-paste": Subcommand(
        "synthetic.copy_paste_release", "real object cut-outs pasted onto real photos, written as a release"
    ),
    "train": Subcommand("tools.train_sam", "train or fine-tune a SAM on a release"),
    "evaluate": Subcommand("tools.evaluate_sam", "single-point mIoU and proposal recall on a release"),
    "average": Subcommand("tools.average_sam", "average the weights of checkpoints of one run"),
    "resample": Subcommand("tools.resample_sam", "weights made for one input size, written for another"),
    "demo": Subcommand("tools.demo", "overlays of a model's masks on a photo"),
}


def version_line() -> str:
    return f"{PROG} {engine_version()} (commit {engine_commit() or 'unknown'})"


def build_parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, title="subcommands")
    for name, subcommand in SUBCOMMANDS.items():
        # The subcommand's own parser reads everything after its name, --help included.
        commands.add_parser(name, help=subcommand.summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(SUBCOMMANDS[args.command].module).main(rest)
