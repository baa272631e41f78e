"""Issue 8's evidence: a random frame split flatters a video model, a split by video does not.

Synthetic videos (`conftest.drifting_videos`): 400 training videos of 4 frames and 200 unseen
videos, the unseen ones given as `data.test`, so each run's test accuracy is its accuracy on
new videos. The same job runs twice, with `data.split_by: sample` and `group`; datacheck
measures how many validation frames have a near-copy in training. Run with `-s` to see the
figures; `HONEST_EVAL_SEEDS=1,2,3,4,5,6` repeats it with other videos and seeds.
"""

import json
import os
import re

import pytest

from trainer import datacheck

from conftest import drifting_videos, run_job, write_npz

SEEDS = [int(s) for s in os.environ.get("HONEST_EVAL_SEEDS", "1").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_group_split_estimates_accuracy_on_unseen_videos(tmp_path, seed):
    x, y, group = drifting_videos(400, 4, seed=seed)
    write_npz(tmp_path / "data", "videos.npz", x, y, group=group)
    x, y, group = drifting_videos(200, 4, seed=seed + 100)
    write_npz(tmp_path / "data", "unseen.npz", x, y, group=group)
    common = ["data.format=npz", f"data.train={tmp_path}/data/videos.npz",
              f"data.test={tmp_path}/data/unseen.npz", "data.validation_split=0.4",
              "model.name=contact_cnn", "train.epochs=12", f"train.seed={seed}",
              # fixed epochs, no choice of the best: validation estimates the model we keep
              "train.early_stopping_patience=0", "train.restore_best=false", "output.plots=false"]
    figures, leaks, warned = {}, {}, {}
    for split_by in ("sample", "group"):
        result, cfg = run_job(tmp_path / "runs", f"name={split_by}", f"data.split_by={split_by}",
                              *common)
        figures[split_by] = (result.metrics["val"]["accuracy"], result.metrics["test"]["accuracy"])
        with open(result.outputs["metrics"]) as f:
            data = json.load(f)["data"]
        assert data["split_method"] == {"sample": "random", "group": "group"}[split_by]
        assert data["train"]["groups"] + data["val"]["groups"] >= 400
        lines = datacheck.check(cfg, str(tmp_path / f"check-{split_by}"))
        found = [re.fullmatch(r"near-duplicate leakage, val: (?:none beyond chance \()?(\d+) of "
                              r"(\d+) samples.*", line) for line in lines]
        near, of = next(m for m in found if m).groups()
        leaks[split_by] = int(near) / int(of)
        warned[split_by] = any(line.startswith("  warning: ") and "of val has a near-copy" in line
                               for line in lines)
        shared = next(line for line in lines if line.startswith("groups in both train and val"))
        if split_by == "group":
            assert data["groups_in_two_splits"]["train/val"] == 0 and shared.endswith(": 0")
            assert abs(data["val"]["samples"] / 1600 - 0.4) < 0.02
        else:
            assert data["groups_in_two_splits"]["train/val"] > 100 and "warning" in shared

    (random_val, random_unseen), (group_val, group_unseen) = figures["sample"], figures["group"]
    print(f"\nseed {seed}")
    print(f"random frame split: val accuracy {random_val:.3f}, unseen videos {random_unseen:.3f}, "
          f"near-duplicate leakage of val {leaks['sample']:.3f}")
    print(f"split by video:     val accuracy {group_val:.3f}, unseen videos {group_unseen:.3f}, "
          f"near-duplicate leakage of val {leaks['group']:.3f}")
    # Over train.seed 1 to 6 (other videos each time) the frame split overstated by 0.23 to 0.32
    # and the group split missed by 0.07 at most: as close as 160 validation videos allow.
    assert random_val - random_unseen > 0.15
    assert abs(group_val - group_unseen) < 0.1
    assert leaks["sample"] > 0.3 and leaks["group"] < 0.05
    assert warned == {"sample": True, "group": False}, warned
