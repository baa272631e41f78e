"""python -m trainer.datacheck: per-split facts, imbalance, leaks, NaN, a sample grid, throughput."""

import re

import numpy as np
import pytest
from PIL import Image

from conftest import blob_images, run_cli, write_npz


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
    near = {m.group(1): float(m.group(2)) for m in (re.match(
        r"near-duplicate leakage, (\w+): ([\d.]+) of (\d+) samples", line) for line in out) if m}
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
