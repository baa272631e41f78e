"""Where the job runs: platform, devices and precision, logging, secrets."""
