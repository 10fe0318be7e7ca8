"""Official Nes2Net releases: back-end, aggregator and SSL front-end weights rebuilt as our modules.

The entry points a user calls::

    from speechbrain_nes2net.official import (
        backend_from_official, aggregator_from_official, frontend_from_official)

A checkpoint whose keys do not map raises :class:`OfficialWeightsError`, which
lists the keys.
"""

from speechbrain_nes2net.official.backend import (
    aggregator_from_official,
    backend_from_official,
)
from speechbrain_nes2net.official.frontend import frontend_from_official
from speechbrain_nes2net.official.keys import OfficialWeightsError

__all__ = [
    "OfficialWeightsError",
    "aggregator_from_official",
    "backend_from_official",
    "frontend_from_official",
]
