"""The GPU benchmark's smoke run on this CPU, and its refusal without a GPU."""

import json
import subprocess
import sys

from conftest import ROOT

SCRIPT = "benchmarks/gpu_throughput.py"


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_refuses_to_run_without_a_gpu():
    proc = _run("--steps", "1")
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
