"""speechbrain-nes2net: Nes2Net anti-spoofing back-ends for SpeechBrain."""

__version__ = "0.1.0"
