"""Evaluation on score files: official metrics, calibration, corpus reports and plots."""
