"""Where and on what the job runs: platform, devices and precision, logging, provenance, secrets."""
