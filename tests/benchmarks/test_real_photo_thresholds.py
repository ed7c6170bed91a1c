"""The threshold benchmark on one validation photo with a small grid (its full run takes the sa1b
preset over all 18 validation photos)."""

from __future__ import annotations

import json

from benchmarks.real_photo_thresholds import PRED_IOU_GRID, STABILITY_GRID, main
from tests.conftest import REAL


def test_every_pair_is_scored_and_the_chosen_one_is_the_best_balanced(tmp_path, capsys):
    out = tmp_path / "thresholds.json"
    args = ["--shared", str(REAL.parent), "--preset", "official", "--points-per-side", "6", "--max-images", "1"]
    assert main([*args, "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    rows = table["rows"]
    assert [(r["pred_iou_thresh"], r["stability_score_thresh"]) for r in rows] == [
        (p, s) for p in PRED_IOU_GRID for s in STABILITY_GRID
    ]
    assert all(r["n_images"] == 1 and r["n_masks"] > 0 for r in rows)
    # stricter filters keep fewer masks, never more
    loosest, strictest = rows[0], rows[-1]
    assert loosest["mean_proposals"] >= strictest["mean_proposals"] and loosest["mean_proposals"] > 0
    assert all(r["ar_1000"] <= loosest["ar_1000"] + 1e-9 for r in rows)  # a subset finds no more

    def balance(r):
        a, b = r["ar_100"], r["precision_50"]
        return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)

    chosen = next(
        r for r in rows if (r["pred_iou_thresh"], r["stability_score_thresh"]) == tuple(table["chosen"].values())
    )
    assert balance(chosen) == max(balance(r) for r in rows)
    printed = capsys.readouterr().out
    assert "1 validation photos" in printed and printed.count("**chosen**") == 1
