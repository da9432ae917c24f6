"""Reporting: figures and tables built from run directories only (the per-class AUC chart for now)."""
