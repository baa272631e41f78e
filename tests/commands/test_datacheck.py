"""python -m trainer.datacheck: per-split facts, imbalance, leaks, NaN, a sample grid, throughput."""

import re

import numpy as np
import pytest
from PIL import Image

from conftest import blob_images, drifting_videos, run_cli, write_npz


def test_datacheck_reports_what_a_user_must_know(tmp_path):
    x, label, _ = blob_images(200, seed=8)
    keep = np.concatenate([np.where(label == 0)[0], np.where(label == 1)[0][:12]])  # imbalanced
    x, label = x[keep], label[keep]
    x[3, 0, 0] = np.nan
    write_npz(tmp_path / "tr", "a.npz", x, label)
    write_npz(tmp_path / "te", "b.npz", np.concatenate([x[:5], x[-25:]]),
              np.concatenate([label[:5], label[-25:]]))  # 30 samples, all copied from train
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={tmp_path}/tr/a.npz",
                   "--set", f"data.test={tmp_path}/te/b.npz", "--set", "data.standardize=false",
                   "--out", str(tmp_path / "check"), module="trainer.datacheck")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    train = next(i for i, line in enumerate(out) if line.startswith("train: "))
    assert re.match(r"train: \d+ samples, shape \(16, 16, 1\), dtype float32, values ", out[train])
    assert any("warning: heavy class imbalance in train" in line for line in out)
    nan = [int(m.group(1)) for m in (re.fullmatch(r"  NaN: (\d+), Inf: 0", line) for line in out) if m]
    assert len(nan) == 3 and sum(nan) == 2  # sample 3 in train or val, and its copy in test
    leaks = {line.split(":")[0]: int(line.split(":")[1].split()[0]) for line in out
             if line.startswith("samples in both")}
    assert leaks["samples in both train and test"] + leaks["samples in both val and test"] == 30
    assert leaks["samples in both train and val"] == 0
    near = {m.group(1): int(m.group(2)) / int(m.group(3)) for m in (re.match(
        r"near-duplicate leakage, (\w+): (?:none beyond chance \()?(\d+) of (\d+) samples", line)
        for line in out) if m}
    # copies of training samples are near-copies too; copies of validation samples are not
    assert near["test"] == pytest.approx(leaks["samples in both train and test"] / 30, abs=0.04)
    assert near["val"] < 0.1
    assert any(line.startswith("  warning: ") and "of test has a near-copy in train" in line
               for line in out)
    assert not any(line.startswith("groups") for line in out)  # these samples have no groups
    img = Image.open(tmp_path / "check" / "samples.png")
    assert img.size[0] > 100 and img.size[1] > 100
    assert re.fullmatch(r"input pipeline: \d+ samples/s steady \(a warm pass, then a timed one\); "
                        r"start-up \d+\.\d\d s", out[-1])


def test_a_regression_leak_is_worded_as_error_not_accuracy(tmp_path):
    from trainer import config, datacheck

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 16, 16, 1)).astype(np.float32)  # distinct draws: no leak by chance
    target = rng.normal(size=(300, 2)).astype(np.float32)
    write_npz(tmp_path / "tr", "a.npz", x, target)
    copies = x[:40] + rng.normal(0, 0.05, x[:40].shape).astype(np.float32)  # near-copies
    fresh = rng.normal(size=(10, 16, 16, 1)).astype(np.float32)
    write_npz(tmp_path / "te", "b.npz", np.concatenate([copies, fresh]), np.zeros((50, 2), np.float32))
    cfg = config.load(None, ["task=regression", "data.format=npz", f"data.train={tmp_path}/tr/a.npz",
                             f"data.test={tmp_path}/te/b.npz"], output_dir=str(tmp_path / "runs"))
    lines = datacheck.check(cfg, str(tmp_path / "check"))
    warnings = [line for line in lines if "warning:" in line]
    assert any("of test has a near-copy in train" in line
               and "test error understates error on new data" in line for line in warnings), lines
    assert not any("accuracy" in line for line in warnings), warnings
    assert not any("val has a near-copy" in line for line in lines)  # val is carved at random


def test_a_split_by_video_reads_as_clean_however_alike_its_frames_are(tmp_path):
    """Frames of one video are near each other, so chance alone would give most evaluation
    frames a near-copy in a training split as large: a split by video that has none is clean,
    and its line says so rather than set 0% against a high chance rate."""
    from trainer import config, datacheck

    for seed in (1, 2):
        x, label, _ = drifting_videos(12, 30, seed=seed, drift=0.03)
        write_npz(tmp_path / str(seed), "tr.npz", x[:240], label[:240])  # videos 0-7
        write_npz(tmp_path / str(seed), "te.npz", x[240:], label[240:])  # videos 8-11
        cfg = config.load(None, ["data.format=npz", f"data.train={tmp_path}/{seed}/tr.npz",
                                 f"data.test={tmp_path}/{seed}/te.npz", "data.validation_split=0.1"],
                          output_dir=str(tmp_path / "runs"))
        lines = datacheck.check(cfg, str(tmp_path / f"check{seed}"))
        test = next(line for line in lines if line.startswith("near-duplicate leakage, test: "))
        assert re.fullmatch(r"near-duplicate leakage, test: none beyond chance \(0 of 120 samples "
                            r"have a training sample nearer than 0\.2; (\d+)% would by chance, "
                            r"this split's samples being as alike as they are; median distance "
                            r"[\d.]+\)", test), test
        assert int(re.search(r"(\d+)% would by chance", test).group(1)) > 50  # the old alarm
        assert not any("warning" in line and "test" in line for line in lines), lines
        # the same frames with near-copies of them in train: both rates and a warning
        copies = x[240:] + np.random.default_rng(seed).normal(0, 0.01, x[240:].shape)
        write_npz(tmp_path / str(seed), "tr.npz", np.concatenate([x[:240], copies]),
                  np.concatenate([label[:240], label[240:]]))
        lines = datacheck.check(cfg, str(tmp_path / f"check{seed}"))
        at = next(i for i, line in enumerate(lines) if line.startswith("near-duplicate leakage, test"))
        assert re.fullmatch(r"near-duplicate leakage, test: \d+ of 120 samples have a training "
                            r"sample nearer than 0\.2 \(\d+%\), \d+% expected by chance \(median "
                            r"distance [\d.]+\)", lines[at]), lines[at]
        assert lines[at + 1].startswith("  warning: "), lines[at + 1]
