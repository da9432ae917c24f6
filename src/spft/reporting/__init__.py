"""Reporting: tables (Markdown/CSV/LaTeX), figures, bootstrap intervals and the HTML report for classification,
detection and segmentation, built from run directories only."""
