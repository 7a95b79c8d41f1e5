"""Many videos in one command (``emvos batch``): a manifest, one predictor per process or Ray worker,
a record per video and a summary, shards for job arrays."""
