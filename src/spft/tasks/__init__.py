"""Tasks: engines that run the shared recipe — classification on Lightning (detection and segmentation later)."""
