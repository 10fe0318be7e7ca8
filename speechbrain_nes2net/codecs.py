"""Codec and channel conditions: what real audio goes through before a detector hears it.

:func:`apply_condition` passes a waveform through one named condition of
:data:`CONDITIONS` and returns it at its rate and length, aligned with the
input to within 1 ms (encoder and decoder delays are trimmed);
:class:`ChannelAugment` draws conditions for training, with SpeechBrain's
augmentation interface (so it also serves in ``speechbrain.augment.augmenter.Augmenter``).

Audio is resampled to the codec's rate and back (torchaudio, no delay). MP3
and Opus run through soundfile (libsndfile's ``compression_level`` sets the
bitrate), G.711 through SpeechBrain's ``CodecAugment``, and AAC, AMR-NB and
G.722, which libsndfile lacks, through PyAV (the ``codecs`` extra). The codecs
are deterministic; packet losses come from ``rng``, by default seeded by the
audio itself. The table of conditions and parameters: docs/ROBUSTNESS.md.

Example
-------
>>> wav = 0.1 * torch.sin(torch.arange(16000) * 0.3)
>>> apply_condition(wav, "telephone").shape
torch.Size([16000])
>>> apply_condition(wav, "mp3_9k")
Traceback (most recent call last):
...
speechbrain_nes2net.codecs.CodecError: unknown condition(s) mp3_9k; known: mp3_8k, ...
"""

import io
import logging
import zlib
from dataclasses import dataclass

import numpy as np
import scipy.signal
import soundfile
import torch
import torchaudio

logger = logging.getLogger(__name__)

#: How to get the conditions that need PyAV.
CODECS_EXTRA = "pip install 'speechbrain-nes2net[codecs]'"
#: Without LAME's gapless header (its first frame is too small for it at 32 kbps
#: and below) the decoder returns the encoder's 576 and its own 529 samples first.
MP3_DELAY = 576 + 529
#: libsndfile maps compression_level 0-1 linearly onto these bitrates (kbps):
#: LAME's MPEG-2 range (16-24 kHz), and Opus's.
LEVEL_RANGES = {"mp3": (160, 8), "opus": (256, 6)}
PACKET_SECONDS, LOSS_RATE = 0.02, 0.1


class CodecError(ValueError):
    """An unknown condition, or audio that a condition cannot code."""


@dataclass(frozen=True)
class Condition:
    """A codec or channel condition: ``kind`` (``sndfile``, ``pyav``, ``g711``, ``telephone``,
    ``loss``), the ``rate`` it runs at (None: the input's), the ``codec`` (libsndfile codec,
    FFmpeg encoder, G.711 law or loss concealment), its ``kbps`` and the ``delay`` in
    samples that encoder and decoder add in front (trimmed)."""

    kind: str
    rate: int = None
    codec: str = None
    kbps: float = None
    delay: int = 0

    def code(self, x, rate, rng):
        """Codes float32 audio at ``rate`` (:attr:`rate` if set): (decoded audio, encoded bytes)."""
        return _CODERS[self.kind](x, self.rate or rate, self, rng)


CONDITIONS = {
    **{f"mp3_{k}k": Condition("sndfile", 16000, "mp3", k) for k in (8, 16, 32, 64, 128)},
    # FFmpeg's AAC encoder primes 1024 samples; G.722's QMF banks delay 22; AMR-NB's
    # 5 ms look-ahead is 40 (measured by cross-correlation; FFmpeg reports 50).
    "aac_32k": Condition("pyav", 16000, "aac", 32, delay=1024),
    "opus_nb_12k": Condition("sndfile", 8000, "opus", 12),
    "opus_wb_16k": Condition("sndfile", 16000, "opus", 16),
    "amr_nb_12k2": Condition("pyav", 8000, "libopencore_amrnb", 12.2, delay=40),
    "g722": Condition("pyav", 16000, "g722", 64, delay=22),
    "g711_mulaw": Condition("g711", 8000, "ULAW", 64),
    "g711_alaw": Condition("g711", 8000, "ALAW", 64),
    "telephone": Condition("telephone", 8000),
    "packet_loss_zero": Condition("loss", codec="zero"),
    "packet_loss_repeat": Condition("loss", codec="repeat"),
}


def resolve_conditions(names):
    """Checks condition names: ``all``, a comma-separated string or a list.

    Raises
    ------
    CodecError
        For an unknown name (the known ones are listed).
    ImportError
        When a condition needs PyAV and it is not installed (naming the extra).

    Example
    -------
    >>> resolve_conditions("g722,telephone"), len(resolve_conditions("all"))
    (['g722', 'telephone'], 15)
    """
    if isinstance(names, str):
        names = list(CONDITIONS) if names.strip() == "all" else names.split(",")
    names = [str(name).strip() for name in names]
    unknown = [name for name in names if name not in CONDITIONS]
    if unknown or not names:
        raise CodecError(
            f"unknown condition(s) {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(CONDITIONS)} (or all)"
        )
    needs_av = [name for name in names if CONDITIONS[name].kind == "pyav"]
    if needs_av:
        try:
            import av  # noqa: F401
        except ImportError:
            raise ImportError(f"{', '.join(needs_av)} need PyAV: {CODECS_EXTRA}") from None
    return names


def apply_condition(wav, name, sample_rate=16000, rng=None):
    """Passes a waveform through a condition; same rate and length, aligned within 1 ms.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) waveform.
    name : str
        A key of :data:`CONDITIONS`.
    sample_rate : int
        Rate of ``wav``.
    rng : numpy.random.Generator, optional
        Source of the packet losses; by default seeded by the audio.

    Returns
    -------
    torch.Tensor
        (samples,) float32.

    Raises
    ------
    CodecError
        For an unknown name, or audio the codec cannot take.
    """
    condition = CONDITIONS[resolve_conditions([name])[0]]
    x = torch.as_tensor(wav).detach().cpu().float().reshape(-1)
    if rng is None:
        rng = np.random.default_rng(zlib.crc32(x.numpy().tobytes()))
    rate = condition.rate or sample_rate
    try:
        coded, _ = condition.code(_resample(x, sample_rate, rate).numpy(), rate, rng)
    except Exception as err:  # noqa: BLE001  (any codec library failure is this audio's)
        seconds = x.shape[0] / sample_rate
        raise CodecError(f"{name} cannot code these {seconds:.3f} s of audio ({err})") from None
    y = _resample(torch.as_tensor(np.asarray(coded, dtype=np.float32)), rate, sample_rate)
    return torch.nn.functional.pad(y, (0, max(0, x.shape[0] - y.shape[0])))[: x.shape[0]]


class ChannelAugment(torch.nn.Module):
    """Codec and channel conditions on training audio: one per utterance, with probability ``prob``.

    SpeechBrain's augmentation interface (``forward(waveforms, lengths)``, same shape,
    padding untouched: one of an ``Augmenter``'s ``augmentations``), and 1-D waveforms
    for the data pipeline (DataLoader workers), where the recipes apply it.

    Arguments
    ---------
    conditions : str or list of str
        Names of :data:`CONDITIONS`, or ``all``.
    prob : float
        Probability that an utterance is coded.
    sample_rate : int
        Rate of the waveforms.
    seed : int, optional
        Draw from an own generator seeded with it (DataLoader workers would each copy
        it); None: each call seeds one from torch's RNG (seeded by SpeechBrain, and
        per worker by DataLoader).

    Example
    -------
    >>> from speechbrain.augment.augmenter import Augmenter
    >>> augment = Augmenter(augmentations=[ChannelAugment(["g711_alaw", "telephone"], seed=0)])
    >>> clean = 0.1 * torch.randn(2, 8000)
    >>> coded, lengths = augment(clean, torch.tensor([1.0, 0.5]))
    >>> coded.shape, bool((coded[1, 4000:] == clean[1, 4000:]).all())  # padding untouched
    (torch.Size([2, 8000]), True)
    """

    def __init__(self, conditions="all", prob=1.0, sample_rate=16000, seed=None):
        super().__init__()
        if not 0 <= prob <= 1:
            raise ValueError(f"ChannelAugment: prob={prob} must be a probability in [0, 1]")
        self.conditions = resolve_conditions(conditions)
        self.prob, self.sample_rate, self.seed = prob, sample_rate, seed
        self._generator = None if seed is None else np.random.default_rng(seed)

    def extra_repr(self):
        """The conditions, probability and seed, shown in the module's repr."""
        return f"conditions={','.join(self.conditions)}, prob={self.prob}, seed={self.seed}"

    def forward(self, waveforms, lengths=None):
        """Codes each utterance with probability ``prob``; (samples,) or (batch, samples)."""
        rng = self._generator or np.random.default_rng(torch.randint(0, 2**62, (1,)).item())
        out = waveforms.detach().cpu().float().clone()
        rows = out.reshape(-1, out.shape[-1])
        valid = torch.ones(len(rows)) if lengths is None else torch.as_tensor(lengths).reshape(-1)
        for row, relative in zip(rows, valid.tolist()):
            length = round(relative * row.shape[0])
            if length and rng.random() < self.prob:
                name = self.conditions[rng.integers(len(self.conditions))]
                try:
                    row[:length] = apply_condition(row[:length], name, self.sample_rate, rng)
                except CodecError as err:  # e.g. a few ms of audio: left uncoded
                    logger.warning("Training audio left uncoded: %s", err)
        return out.to(waveforms.device, waveforms.dtype)


def _resample(x, rate, target):
    return x if rate == target else torchaudio.functional.resample(x, rate, target)


def _sndfile(x, rate, condition, rng):
    """MP3 or Opus through libsndfile, at the condition's bitrate."""
    high, low = LEVEL_RANGES[condition.codec]
    # libsndfile 1.2.2 refuses level 1.0 for MP3; 0.99 reaches LAME's lowest bitrate.
    level = min((high - condition.kbps) / (high - low), 0.99)
    mp3 = condition.codec == "mp3"
    buffer = io.BytesIO()
    soundfile.write(
        buffer, x, rate, format="MP3" if mp3 else "OGG",
        subtype="MPEG_LAYER_III" if mp3 else "OPUS", compression_level=level,
        bitrate_mode="CONSTANT" if mp3 else None,  # libsndfile: Opus is variable only
    )  # fmt: skip
    n_bytes = buffer.tell()
    buffer.seek(0)
    y, _ = soundfile.read(buffer, dtype="float32")
    return (y[MP3_DELAY:] if mp3 and len(y) > len(x) else y), n_bytes  # no gapless header


def _pyav(x, rate, condition, rng):
    """AAC, AMR-NB or G.722 through FFmpeg (PyAV), in memory, encoder delay trimmed."""
    import av

    encoder = av.CodecContext.create(condition.codec, "w")
    encoder.sample_rate, encoder.layout = rate, "mono"
    encoder.format = encoder.codec.audio_formats[0].name
    encoder.bit_rate = int(condition.kbps * 1000)
    encoder.open()
    size, fmt = encoder.frame_size, encoder.format.name
    # Whole frames, with room for the delay: every input sample comes back.
    padded = np.zeros(-(-(len(x) + condition.delay) // size) * size, dtype=np.float32)
    padded[: len(x)] = x
    if fmt == "s16":
        padded = np.round(np.clip(padded, -1, 32767 / 32768) * 32768).astype(np.int16)
    packets = []
    for start in range(0, len(padded), size):
        chunk = padded[None, start : start + size]
        frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create(condition.codec.replace("libopencore_", ""), "r")
    decoder.sample_rate, decoder.layout = rate, "mono"
    decoder.extradata = encoder.extradata
    frames = [frame for packet in packets + [None] for frame in decoder.decode(packet)]
    y = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    y = y / 32768.0 if y.dtype == np.int16 else y
    return y[condition.delay : condition.delay + len(x)], sum(packet.size for packet in packets)


def _g711(x, rate, condition, rng):
    """G.711 companding through SpeechBrain's CodecAugment (libsndfile)."""
    from speechbrain.augment.codec import CodecAugment

    coded = CodecAugment(rate).apply_codec(torch.from_numpy(x), "WAV", condition.codec)
    return coded.numpy(), len(x)


def _telephone(x, rate, condition, rng):
    """The telephone band, 300-3400 Hz, without phase shift (forward and backward)."""
    sos = scipy.signal.butter(6, (300, 3400), "bandpass", fs=rate, output="sos")
    return scipy.signal.sosfiltfilt(sos, x), None


def _packet_loss(x, rate, condition, rng):
    """Drops 20 ms packets at random; silence or the previous packet replaces each."""
    size = round(PACKET_SECONDS * rate)
    y = x.copy()
    for packet in np.flatnonzero(rng.random(-(-len(x) // size)) < LOSS_RATE):
        start = packet * size
        lost = y[start : start + size]
        # In order, so a run of losses repeats the last packet received.
        repeat = condition.codec == "repeat" and packet
        lost[:] = y[start - size : start][: len(lost)] if repeat else 0
    return y, None


_CODERS = {"sndfile": _sndfile, "pyav": _pyav, "g711": _g711,
           "telephone": _telephone, "loss": _packet_loss}  # fmt: skip
