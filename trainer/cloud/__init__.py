"""Vertex AI: the one place a job for the cloud is built, checked and sent.

`trainer.submit` (one training job) and `trainer.tune --vertex` (a search whose trials are jobs)
describe their machines the same way, so they share one builder and one set of defaults
(`vertex_job`), one set of checks on what a job may carry (`preflight`) and one client
(`client`). A new cloud option goes into `vertex_job`.
"""
