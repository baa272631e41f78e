"""The GPU benchmark's smoke run on this CPU, and its refusal without a GPU; the preemption
backup's cost per step."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT

SCRIPT = "benchmarks/gpu_throughput.py"


def _run(*args, script=SCRIPT, env=None):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, **(env or {})))


def test_refuses_to_run_without_a_gpu():
    # the GPUs hidden, so that this holds on a machine that has one too
    proc = _run("--steps", "1", env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no GPU found")


def test_smoke_run_on_the_cpu_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("--allow_cpu", "--tiny", "--steps", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == ["hexagonal_cnn", "raccoon"]
    for row in report["results"]:
        for key in ("input_local_samples_per_s", "train_off_samples_per_s",
                    "train_mixed_samples_per_s", "train_mixed_xla_samples_per_s"):
            assert row[key] > 0, (key, row)
        assert 0.0 <= row["input_wait_fraction"] < 1.0
    assert "train_mixed_xla_samples_per_s" in proc.stdout  # the printed table


def test_named_backbone_reports_its_rate_and_utilisation(tmp_path):
    # the backbones' benchmark on a Vertex AI GPU is this code at 224 pixels and all six models
    out = tmp_path / "bench.json"
    proc = _run("--allow_cpu", "--models", "mobilenet_v3_small", "--image_size", "32", "--batch",
                "2", "--steps", "1", "--modes", "off", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["model"] == "mobilenet_v3_small" and row["image"] == "32x32x3"
    assert row["train_off_samples_per_s"] > 0 and 0 < row["train_off_mfu"] < 1
    assert 0.005 < row["train_gflop_per_sample"] < 0.05  # about 3 x 3 MFLOP at 32x32
    assert "train_mixed_samples_per_s" not in row and "input_wait_fraction" not in row


def test_cpu_settings_rejects_an_unknown_setting():
    proc = _run("--settings", "default,threads_9", script="benchmarks/cpu_settings.py")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown setting 'threads_9'")


def test_preemption_overhead_prints_both_timings():
    proc = _run("--steps", "200", "--repeats", "1", script="benchmarks/preemption_overhead.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {line.split(":")[0].strip(): float(line.split(":")[1])
               for line in proc.stdout.splitlines() if ":" in line}
    assert figures["without the preemption backup"] > 0 and figures["with it"] > 0
    assert abs(figures["with it"] - figures["without the preemption backup"]
               - figures["cost per step"]) < 0.002


def test_neardup_rates_prints_both_rates():
    proc = _run("--samples", "200", "--repeats", "1", script="benchmarks/neardup_rates.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = {line.split(":")[0]: float(line.split(":")[1].split()[0])
             for line in proc.stdout.splitlines() if line.endswith(")") and "rate:" in line}
    assert set(rates) == {"false-positive rate", "true-positive rate"}, proc.stdout
    assert rates["false-positive rate"] == 0.0 and rates["true-positive rate"] > 0.5


def test_training_rate_prints_every_way_and_the_goals(tmp_path):
    out = tmp_path / "rate.json"
    proc = _run("--batch", "8", "--steps", "2", "--rounds", "1", "--json", str(out),
                script="benchmarks/training_rate.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    ways = [r["way"] for r in report["results"]]
    assert [w.split(",")[1].strip() for w in ways[:4]] == ["float32"] * 2 + ["bfloat16"] * 2
    for row in report["results"]:
        assert row["samples_per_s"] > 0 and 0 < row["mfu"] < 1, row
    assert ways[4] == "job, defaults, whole epoch (epoch_samples_per_s)"
    # the job's epochs include validation and the checkpoint: a share of them is training
    assert all(0 < share <= 1.05 for share in report["job_train_share"]), report["job_train_share"]
    assert report["flops"] == 3 * 12759168  # seed 000's net, counted by hand in test_training
    # the peer runs in each of its ways where torch is installed, and is said to be left out
    # where it is not; the ratios are taken against its best way, round by round
    assert (len(ways) == 5 + 8) == (report["torch"] is not None)
    if report["torch"] is None:
        assert "PyTorch peer: left out" in proc.stdout
    else:
        assert all(len(r["round_ratios"]) == 1 for r in report["results"])
    assert "goal: the defaults' training steps" in proc.stdout
    assert "load average" in proc.stdout


def test_quality_prints_both_figures_per_task(tmp_path):
    out = tmp_path / "quality.json"
    proc = _run("--tasks", "shapes", "--samples", "120", "--epochs", "1", "--json", str(out),
                script="benchmarks/quality.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["task"] == "shapes" and 0 <= row["package"] <= 1 and 0 <= row["plain"] <= 1
    assert "package defaults" in proc.stdout and "plain script" in proc.stdout


def test_remote_pipeline_prints_local_and_bucket_rates():
    proc = _run("--samples", "400", "--big_samples", "8", "--shards", "2", "--threads", "2",
                "--blocks", "128", script="benchmarks/remote_pipeline.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.split()[0] in ("32x32", "256x256")]
    assert [r[0] for r in rows] == ["32x32", "256x256"], proc.stdout
    for row in rows:
        local, near, far, far_local, far_near = (float(v.replace(",", "")) for v in row[-5:])
        assert min(local, near, far) > 0
        assert abs(far / local - far_local) < 0.01 and abs(far / near - far_near) < 0.01
    assert "load average" in proc.stdout  # the machine's load beside the figures


def test_time_context_describes_itself_and_refuses_a_used_folder(tmp_path):
    # The measurement itself trains three models (minutes, `--quick` 40 s): here its help and
    # its refusals, which come before any video is written.
    script = "benchmarks/time_context.py"
    proc = _run("--help", script=script)
    assert proc.returncode == 0 and "data.frame_context" in proc.stdout and "--quick" in proc.stdout
    (tmp_path / "old").write_text("")
    proc = _run("--dir", str(tmp_path), script=script)
    assert proc.returncode == 2 and not list(tmp_path.glob("train*"))
    assert proc.stderr.strip().splitlines() == [
        f"error: --dir={tmp_path} is not empty, expected a new folder (runs of the same name in "
        "it would resume)"]
    proc = _run("--contexts", "1,x", "--dir", str(tmp_path / "new"), script=script)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --contexts=1,x")


def test_few_labels_help_and_its_tasks():
    # Its quickest run trains two pretraining runs and four target runs (minutes here), so the
    # test checks the command line and the two tasks it generates, not a run.
    proc = _run("--help", script="benchmarks/few_labels.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--labels" in proc.stdout and "--quick" in proc.stdout
    proc = _run("--labels", "0", script="benchmarks/few_labels.py")
    assert proc.returncode == 2 and "--labels 0: expected a positive number" in proc.stderr
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import glyphs

    source, target = glyphs.alphabet(20, 101), glyphs.alphabet(10, 202)
    x, y = glyphs.sample(target, 40, seed=0)
    assert x.shape == (40, 32, 32, 1) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.bincount(y).tolist() == [4] * 10  # classes in equal shares
    # the two alphabets draw from the same strokes but share no glyph: the target's classes
    # are new
    def glyph_set(alphabet):
        return {tuple(sorted(map(tuple, np.round(g.reshape(4, 4), 3).tolist()))) for g in alphabet}

    assert len(glyph_set(source)) == 20 and len(glyph_set(target)) == 10
    assert not glyph_set(source) & glyph_set(target)
