"""Cloud entry point (seed 001's `train_model_cloud.py`), the one the container runs on Vertex AI.

For now it is the same job as `trainer.task`; the Vertex AI defaults (output from AIP_MODEL_DIR,
structured Cloud Logging) belong to the environment module and arrive with the cloud work.
"""

from trainer.task import run_entrypoint

if __name__ == "__main__":
    run_entrypoint()
