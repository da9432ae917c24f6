"""Data: sample contract, image IO, datasets, splits and the phantom generator."""
