"""Multi-run experiments built from the pipeline's stages (``alignlab study <name>``)."""
