"""Train image CNNs from one config file, locally or as a Vertex AI custom job."""

__version__ = "0.1.0"
