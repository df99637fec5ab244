"""Synthetic data with known truth: image phantoms, cohorts and derivative tables."""

from ketabids.simulate.phantom import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom"]
