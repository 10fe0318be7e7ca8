"""The one audio loading path: data preparation, training, evaluation and inference read
audio with :func:`load_audio` (headers with :func:`audio_info`), so that a file is
resampled, downmixed and rejected (:class:`AudioError`) the same way everywhere.

libsndfile (soundfile) reads WAV, FLAC, OGG (Vorbis, Opus) and MP3. The formats
of phones, browsers and videos (:data:`FFMPEG_EXTENSIONS`: M4A/AAC, WebM, MP4,
AMR, ...) are decoded by FFmpeg through PyAV, when it is installed (the
``codecs`` and ``app`` extras); by extension only, so that a corrupt WAV file is
reported, not guessed at by FFmpeg.

Example
-------
>>> import numpy as np, soundfile as sf, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "tone.flac")
>>> sf.write(path, np.zeros((8000, 2), dtype="float32") + 0.1, 8000)
>>> audio_info(path).duration
1.0
>>> load_audio(path, sample_rate=16000).shape
torch.Size([16000])
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

DEFAULT_SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file that cannot be used: ``path`` and the ``reason``, in words a user can act on."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


#: Extensions decoded by FFmpeg (PyAV) instead of libsndfile.
FFMPEG_EXTENSIONS = frozenset({"m4a", "aac", "mp4", "m4v", "mov", "webm", "mkv", "amr", "3gp", "wma"})
#: What a user without PyAV is told to install.
FFMPEG_HINT = (
    f"files of {', '.join(sorted(FFMPEG_EXTENSIONS))} are decoded by FFmpeg, through PyAV: "
    "pip install 'speechbrain-nes2net[codecs]'"
)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples are decoded, except for a
    container that states no duration)."""

    duration: float
    sample_rate: int
    channels: int
    frames: int


def audio_info(path):
    """Reads duration, sample rate and channel count from the file header.

    Arguments
    ---------
    path : str or Path
        An audio file: WAV, FLAC, OGG, MP3 (libsndfile), or one of
        :data:`FFMPEG_EXTENSIONS` (FFmpeg, through PyAV).

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        For a missing or unreadable file.
    """
    _check_file(path)
    if _decoded_by_ffmpeg(path):
        return _ffmpeg_info(path)
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioError(path, f"not a readable audio file ({err})") from None
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate}")
    return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)


def load_audio(path, sample_rate=DEFAULT_SAMPLE_RATE, max_seconds=None):
    """Loads an audio file as a mono (:func:`to_mono`) float32 waveform at ``sample_rate``.

    Arguments
    ---------
    path : str or Path
        The audio file.
    sample_rate : int
        The rate the caller wants (16 kHz for the SSL models).
    max_seconds : float, optional
        Only decode the first ``max_seconds`` seconds; None: the whole file.

    Returns
    -------
    torch.Tensor
        (samples,), in [-1, 1] for integer PCM of any width.

    Raises
    ------
    AudioError
        Missing, unreadable, truncated or empty files, NaN or infinite samples.
    """
    if _decoded_by_ffmpeg(path):
        _check_file(path)
        data, file_rate, promised = _ffmpeg_decode(path, max_seconds)
        if promised is not None and max_seconds is not None:
            promised = min(promised, max_seconds)
        # FFmpeg decodes what a cut-off file still holds; its header says how much there was.
        if data.shape[0] and promised is not None and data.shape[0] / file_rate < 0.9 * promised - 0.1:
            raise AudioError(path, (
                f"is truncated or corrupt: its header promises {promised:.2f} s, "
                f"{data.shape[0] / file_rate:.2f} s decode"
            ))  # fmt: skip
    else:
        info = audio_info(path)
        frames = -1
        if max_seconds is not None:
            frames = min(info.frames, round(max_seconds * info.sample_rate))
        try:
            data, file_rate = soundfile.read(str(path), frames=frames, dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError) as err:
            raise AudioError(path, f"could not decode audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    wav = to_mono(torch.from_numpy(data))
    if file_rate != sample_rate:
        wav = torchaudio.functional.resample(wav, file_rate, sample_rate)
    return wav.contiguous()


def to_mono(audio):
    """Averages the channels of (samples, channels) audio, or a batch of it: the one downmix
    (training, evaluation, exported models and ``nes2net-score``).

    Arguments
    ---------
    audio : torch.Tensor
        (samples, channels) or (batch, samples, channels).

    Returns
    -------
    torch.Tensor
        float32, the channel axis removed.

    Example
    -------
    >>> to_mono(torch.tensor([[1.0, 3.0], [0.0, 1.0]]))
    tensor([2.0000, 0.5000])
    """
    return audio.to(torch.float32).mean(dim=-1)


def is_audio_path(path):
    """True for file names with an extension :func:`load_audio` reads (libsndfile's or FFmpeg's)."""
    return Path(path).suffix.lower().lstrip(".") in _AUDIO_EXTENSIONS


_AUDIO_EXTENSIONS = {e.lower() for e in soundfile.available_formats()} | {
    "wav",
    "flac",
    "ogg",
    "opus",
    "mp3",
} | FFMPEG_EXTENSIONS


def _check_file(path):
    """AudioError for a missing or 0-byte file."""
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    if Path(path).stat().st_size == 0:
        raise AudioError(path, "contains no samples (the file is empty, 0 bytes)")


def _decoded_by_ffmpeg(path):
    return Path(path).suffix.lower().lstrip(".") in FFMPEG_EXTENSIONS


def _open_ffmpeg(path):
    """The PyAV container of ``path`` and its first audio stream; AudioError if neither."""
    try:
        import av
    except ImportError:
        raise AudioError(path, f"cannot be read without FFmpeg ({FFMPEG_HINT})") from None
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise AudioError(path, f"not a readable audio file (FFmpeg: {err})") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(path, "has no audio stream")
    return container, container.streams.audio[0]


def _header_duration(container, stream):
    """Seconds the stream's or the container's header states; None when neither does."""
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6  # microseconds (AV_TIME_BASE)
    return None  # a live recording's container


def _ffmpeg_info(path):
    """:func:`audio_info` of a file FFmpeg decodes: its header's duration, else its samples'."""
    container, stream = _open_ffmpeg(path)
    with container:
        rate, channels = stream.rate, stream.channels
        if not rate or rate <= 0:
            raise AudioError(path, f"invalid sample rate {rate}")
        duration = _header_duration(container, stream)
    if duration is None:  # count the samples
        data, decoded_rate, _ = _ffmpeg_decode(path)
        duration = data.shape[0] / decoded_rate
    frames = round(duration * rate)
    return AudioInfo(frames / rate, rate, channels, frames)


def _ffmpeg_decode(path, max_seconds=None):
    """(samples, channels) float32 samples of the first audio stream, their rate, and the
    duration its header states (None if it states none)."""
    container, stream = _open_ffmpeg(path)  # an AudioError without PyAV
    import av

    rate, channels, limit = stream.rate, stream.channels or 1, None
    chunks, count, resampler = [], 0, None
    try:
        with container:
            duration = _header_duration(container, stream)
            for frame in container.decode(stream):
                if resampler is None:
                    rate, channels = frame.sample_rate, len(frame.layout.channels)
                    limit = None if max_seconds is None else round(max_seconds * rate)
                    # Planar float of the stream's own layout and rate: only the sample format changes.
                    resampler = av.AudioResampler("fltp", frame.layout, rate)
                elif (frame.sample_rate, len(frame.layout.channels)) != (rate, channels):
                    # Joined recordings: one rate (or channel count) would play the rest wrongly.
                    raise AudioError(path, (
                        f"changes from {rate} Hz, {channels} channel(s) to {frame.sample_rate} Hz, "
                        f"{len(frame.layout.channels)} channel(s) mid-stream"
                    ))  # fmt: skip
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
                    count += chunks[-1].shape[1]
                if limit is not None and count >= limit:
                    break
    except AudioError:
        raise
    except (av.FFmpegError, ValueError) as err:
        raise AudioError(path, f"could not decode audio (FFmpeg: {err})") from None
    if not chunks:
        return np.zeros((0, channels), dtype=np.float32), rate, duration
    return np.ascontiguousarray(np.concatenate(chunks, axis=1)[:, :limit].T), rate, duration


def fixed_length(wav, num_samples, random_offset=False, generator=None):
    """Repeat-pads a short waveform or crops a long one to ``num_samples``.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) waveform, at least one sample.
    num_samples : int
        Output length.
    random_offset : bool
        Crop at a uniformly random offset (training) instead of the start.
    generator : torch.Generator, optional
        Random source of the offset.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> fixed_length(torch.tensor([1.0, 2.0, 3.0]), 7)
    tensor([1., 2., 3., 1., 2., 3., 1.])
    >>> fixed_length(torch.arange(10.0), 4)
    tensor([0., 1., 2., 3.])
    """
    length = wav.shape[0]
    if length < num_samples:
        return wav.repeat(-(-num_samples // length))[:num_samples]
    offset = 0
    if random_offset and length > num_samples:
        offset = int(torch.randint(0, length - num_samples + 1, (1,), generator=generator))
    return wav[offset : offset + num_samples]


def evaluation_crop(wav, num_samples=None, min_samples=0):
    """The evaluation input of a waveform (the recipe's and every scoring engine's).

    Its first ``num_samples`` samples, else all of it, repeat-padded when
    shorter (the full utterance to ``min_samples``: a very short file still
    yields a few SSL frames).

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) waveform, at least one sample.
    num_samples : int, optional
        Fixed evaluation length; None: the full utterance.
    min_samples : int
        Shortest full-utterance input.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> evaluation_crop(torch.arange(5.0), num_samples=3).tolist()
    [0.0, 1.0, 2.0]
    >>> evaluation_crop(torch.arange(2.0), min_samples=5).tolist()
    [0.0, 1.0, 0.0, 1.0, 0.0]
    >>> evaluation_crop(torch.arange(6.0), min_samples=5).shape
    torch.Size([6])
    """
    if num_samples is not None:
        return fixed_length(wav, int(num_samples))
    if wav.shape[0] < min_samples:
        return fixed_length(wav, int(min_samples))
    return wav
