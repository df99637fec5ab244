"""Nipype workflows: ``init_*_wf`` factories with ``inputnode``/``outputnode``."""
