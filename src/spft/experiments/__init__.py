"""Experiments: the self-describing run directory (and, later, multi-seed and ablation sweeps)."""
