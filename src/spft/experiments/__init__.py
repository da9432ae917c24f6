"""Experiments: the self-describing run directory (files, verified checkpoints, one-writer lock) and the
multi-seed and ablation sweeps built on it."""
