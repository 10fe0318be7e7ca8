"""Released models: export folders, their interface (``AntiSpoofModel``) and ``nes2net-score``."""
