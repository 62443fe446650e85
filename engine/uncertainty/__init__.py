"""Uncertainty people can trust: unfamiliar-input detection from the DDPM (familiarity), pixel calibration
(ECE, temperature scaling), a measured review flag (AUROC, risk–coverage, one threshold semantic) and the
per-method scorecard `compare` writes. Each concept lives in its own module; none imports Streamlit."""
