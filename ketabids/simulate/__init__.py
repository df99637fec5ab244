"""Synthetic data with known truth: image phantoms, cohorts and derivative tables."""
