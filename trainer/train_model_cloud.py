"""Cloud entry point (seed 001's `train_model_cloud.py`): the job as it runs on Vertex AI.

The same job as `trainer.task`, with logging as Cloud Logging's JSON lines even where Vertex AI is
not detected (e.g. a container started by hand); outputs follow the AIP_* directories when set.
"""

from trainer.task import run_entrypoint

if __name__ == "__main__":
    run_entrypoint(log_format="json")
