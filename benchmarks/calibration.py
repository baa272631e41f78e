"""Does temperature scaling (`eval.calibrate: temperature`) make the probabilities honest? For
seed 001's contact task (touch / no touch, imbalanced) and the digits task of the shipped
sample data, trains the layout's config with calibration on and prints the expected calibration
error (15 bins) before and after, on validation (where T is fitted) and test (held out), with
the fitted temperature and the test ROC and precision-recall areas.

    python benchmarks/calibration.py [--tasks contact digits] [--samples N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "local"))

import make_sample_data  # noqa: E402
from trainer import config as config_mod, job  # noqa: E402
from trainer.runtime.platform import Platform  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["contact", "digits"])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    print("| task | T | ECE val before | ECE val after | ECE test before | ECE test after | "
          "test roc_auc | test pr_auc |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            data = make_sample_data.make(task, os.path.join(tmp, "data"), samples=args.samples)
            cfg = config_mod.load(
                os.path.join(ROOT, "local", "configs", f"{task}.yaml"),
                [f"data.train={data}/*", f"name={task}", f"train.epochs={args.epochs}",
                 "eval.calibrate=temperature", "output.plots=false", "output.report=false",
                 "output.saved_model=false"], output_dir=os.path.join(tmp, "runs"))
            result = job.run(cfg, Platform())
            with open(result.outputs["metrics"]) as f:
                m = json.load(f)
        c = m["calibration"]
        print(f"| {task} | {c['temperature']:.3f} | {c['ece_before']['val']:.4f} | "
              f"{c['ece_after']['val']:.4f} | {c['ece_before']['test']:.4f} | "
              f"{c['ece_after']['test']:.4f} | {m['test']['roc_auc']:.4f} | "
              f"{m['test']['pr_auc']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
