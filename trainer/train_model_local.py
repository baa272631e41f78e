"""Local entry point (seed 001's `train_model_local.py`): runs go under ./runs by default."""

from trainer.task import run_entrypoint

if __name__ == "__main__":
    run_entrypoint(output_dir="runs")
