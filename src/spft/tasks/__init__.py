"""Tasks: engines that run the shared recipe — classification and segmentation (SAM2) on Lightning, detection
(YOLOv8, RT-DETR) on Ultralytics; ``registry`` picks one from the config's ``task`` key."""
