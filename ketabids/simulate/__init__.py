"""Synthetic data with known truth: image phantoms, cohorts and derivative tables.

* ``make_phantom`` (``phantom``): one whole-head T1w scan and its native-space truth.
* ``write_bids_dataset`` (``dataset``): a cohort as a valid BIDS dataset, truth in ``sourcedata/truth``.
* ``simulate_cohort`` (``cohort``) and ``write_tables`` (``tables``): cohorts and derivative tables.
"""

from ketabids.simulate.dataset import write_bids_dataset
from ketabids.simulate.phantom import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom", "write_bids_dataset"]
