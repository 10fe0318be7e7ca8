"""speechbrain-nes2net: Nes2Net anti-spoofing back-ends for SpeechBrain."""

import logging

__version__ = "0.1.0"


def _without_torchvision_notice(record):
    """Drops SpeechBrain's "torchvision is not available" notice: we never save image samples."""
    return "torchvision is not available - cannot save figures" not in record.getMessage()


# SpeechBrain logs the notice when its train logger is first imported, which
# every recipe does after importing this package.
logging.getLogger("speechbrain.utils.train_logger").addFilter(_without_torchvision_notice)
