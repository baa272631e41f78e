# The training image: the same job as on a laptop, run by Vertex AI custom jobs.
#   GPU (default): docker build -t trainer .       (or: make image)
#   CPU:           docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0 -t trainer .
#   run:           docker run --rm trainer --config gs://BUCKET/configs/job.yaml
# The GPU base carries the CUDA and cuDNN libraries TensorFlow 2.21 was built against; the host
# needs only an NVIDIA driver recent enough for them (Vertex AI's GPU machines have one).
# Any Debian or Ubuntu base with Python 3.10+ and pip works too (docs/container.md).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# The package as a wheel, built apart so that no build folder, egg-info or source copy is left
# in the image: what runs is the installed package.
FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY setup.py ./
COPY trainer ./trainer
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# The base, the environment and the user the job runs as, owning only the default output folder.
# A user of uid TRAINER_UID is reused when the base has one (Ubuntu's `ubuntu` is 1000), else
# created.
FROM ${BASE_IMAGE} AS user
ARG TRAINER_UID=1000
# Set before any process starts: TensorFlow's C++ logging reads the level at its first line.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN if ! getent passwd "${TRAINER_UID}" > /dev/null; then \
        useradd --create-home --uid "${TRAINER_UID}" trainer; fi \
    && mkdir -p /app/runs \
    && chown "${TRAINER_UID}" /app/runs
WORKDIR /app

FROM user
ARG TRAINER_UID=1000
# The dependencies first, in a layer of their own that a change to the code alone reuses:
# setup.py with no package beside it installs its install_requires only (no test extra), every
# one at the version in constraints.txt; the empty `trainer` it leaves is then removed.
# Left out, never used at run time: TensorFlow's C++ headers (430 MB, for compiling custom ops)
# and libclang (60 MB, a TensorFlow requirement that no module of TensorFlow or Keras imports);
# this saves space where this layer installed TensorFlow (a TensorFlow base keeps its copy).
COPY constraints.txt setup.py /tmp/deps/
RUN python -m pip install --no-cache-dir --constraint /tmp/deps/constraints.txt /tmp/deps \
    && python -m pip uninstall --yes trainer libclang \
    && rm -rf /tmp/deps \
    && python -c "import importlib.util as u, os, shutil; \
tf = os.path.dirname(u.find_spec('tensorflow').origin); \
shutil.rmtree(os.path.join(tf, 'include'), ignore_errors=True)"
# The package itself, from the wheel; the import check loads the installed copy (nothing named
# trainer is in /app).
COPY --from=wheel /wheels /tmp/wheels
RUN python -m pip install --no-cache-dir --no-deps /tmp/wheels/trainer-*.whl \
    && rm -rf /tmp/wheels \
    && python -c "import trainer.kerasflavor, trainer.task, trainer; \
assert not trainer.__file__.startswith('/app/'), trainer.__file__"
# The GPU benchmark runs in the image too (docs/performance.md, "GPU benchmark").
COPY benchmarks ./benchmarks
USER ${TRAINER_UID}

ENTRYPOINT ["python", "-m", "trainer.task"]
