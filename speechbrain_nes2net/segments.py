"""The toolkit's segment conventions for spoof localisation (partially spoofed speech).

A segment is ``segment_shift`` seconds of a recording, scored from the SSL
frames it covers; model (:mod:`speechbrain_nes2net.lobes.localization`),
evaluation (:mod:`speechbrain_nes2net.evaluation.localization`) and data
preparation (``data_prep/partialspoof_prepare.py``) share these names.

Authors
 * speechbrain-nes2net contributors
"""

#: The released PartialSpoof segment resolutions, in seconds.
SEGMENT_SHIFTS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
#: How the scores (or logits) of the frames of one segment combine into the
#: segment's: ``min`` (PartialSpoof's rule: a segment is spoof when any part
#: of it is), ``mean`` or ``max``.
SEGMENT_POOLINGS = ("min", "mean", "max")
