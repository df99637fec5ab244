"""HTML reports.

``participant``: the participant report (``sub-<label>.html``); ``figures``: slice mosaics and
other plots as inline PNGs; ``methods``: methods text, references and software versions.
Import the submodules directly (they load matplotlib and nilearn).
"""
