# The training image: the same job as on a laptop, run by Vertex AI custom jobs.
#   GPU (default): docker build -t trainer .
#   CPU:           docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0 -t trainer .
#   run:           docker run --rm trainer --config gs://BUCKET/configs/job.yaml
# The GPU base carries the CUDA and cuDNN libraries TensorFlow 2.21 was built against; the host
# needs only an NVIDIA driver recent enough for them (Vertex AI's GPU machines have one).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY constraints.txt setup.py README.md ./
COPY trainer ./trainer
# The GPU benchmark runs in the image too (docs/performance.md, "GPU benchmark").
COPY benchmarks ./benchmarks
# The package without its test extra, every dependency at the version the tests passed with;
# then a user to run as, owning only the default output folder.
RUN python -m pip install --no-cache-dir --constraint constraints.txt . \
    && python -c "import trainer.kerasflavor, trainer.task" \
    && useradd --create-home --uid 1000 trainer \
    && mkdir /app/runs \
    && chown trainer /app/runs
USER 1000

ENTRYPOINT ["python", "-m", "trainer.task"]
