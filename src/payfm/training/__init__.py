"""Training data: labels with maturity, and (later) time splits, models and calibration."""
