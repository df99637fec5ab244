"""Thin Nipype ``SimpleInterface`` shells over the pure functions of ``ketabids.processing``."""
