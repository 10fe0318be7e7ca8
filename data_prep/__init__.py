"""Corpus preparation: each corpus into the one CSV manifest schema.

Not installed with the library (``pip install`` installs ``speechbrain_nes2net``
only): the scripts run from the repository, ``python data_prep/<corpus>_prepare.py``,
and the recipes put the repository root on ``sys.path`` to import them.
"""
