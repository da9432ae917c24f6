"""SPFT for segmentation: SAM2 with box prompts on Lightning (``task: segmentation``)."""
