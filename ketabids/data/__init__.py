"""Bundled data lookup: the template (from nilearn) and atlases (shipped in MNI152NLin2009aSym)."""

from ketabids.data.atlases import ATLASES, Atlas, load_atlas
from ketabids.data.templates import TEMPLATE_NAME, load_template

__all__ = ["ATLASES", "TEMPLATE_NAME", "Atlas", "load_atlas", "load_template"]
