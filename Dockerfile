# The training image: the same job as on a laptop, run by Vertex AI custom jobs on a GPU.
#   docker build -t trainer .
#   docker run --rm trainer --config gs://BUCKET/configs/job.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY setup.py README.md ./
COPY trainer ./trainer
COPY local/configs ./local/configs
COPY benchmarks ./benchmarks
# tensorflow[and-cuda] brings the CUDA and cuDNN libraries as wheels, so one image serves CPU and GPU.
RUN pip install --no-cache-dir "tensorflow[and-cuda]>=2.21,<2.22" . \
    && python -c "import trainer.kerasflavor"

ENTRYPOINT ["python", "-m", "trainer.train_model_cloud"]
