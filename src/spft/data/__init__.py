"""Data: sample contract, image IO (PNG, JPEG, DICOM), dataset adapters, splits, caches, masks, detection layouts
and the phantom generator."""
