"""Names that model folders exported before version 0.2 load from.

Their ``hyperparams.yaml`` and ``custom_interface.py`` name classes of this
module path (``speechbrain_nes2net.inference.AntiSpoofEncoder``, ...); the
classes now live in :mod:`speechbrain_nes2net.pretrained` and are handed on
here so that those folders keep loading. New code imports from
:mod:`speechbrain_nes2net.pretrained`.
"""

from speechbrain_nes2net.lobes.ssl import SSLFrontendFromConfig, hf_cache_dir
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import (
    AntiSpoofEncoder,
    AntiSpoofHead,
    AudioNormalizer,
    LabelEncoder,
    MonoWaveforms,
    PassThrough,
)

__all__ = [
    "AntiSpoofEncoder",
    "AntiSpoofHead",
    "AntiSpoofModel",
    "AudioNormalizer",
    "LabelEncoder",
    "MonoWaveforms",
    "PassThrough",
    "SSLFrontendFromConfig",
    "hf_cache_dir",
]
