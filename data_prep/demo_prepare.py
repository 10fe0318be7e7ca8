"""The embedded demo corpus: synthetic bona fide speech and vocoder-like spoofs.

The demo exercises the real pipeline end to end on a 2-core CPU in minutes,
with nothing downloaded:

- :func:`prepare_demo_corpus` writes FLAC files and manifests (the one schema
  of :mod:`speechbrain_nes2net.manifest`) of a corpus whose bona fide class is
  speech-like harmonic signals (a glottal-like harmonic source with intonation
  through formant resonators, syllable envelopes and breath noise) and whose
  spoof class is the *same* signals re-synthesised through a vocoder-like path
  (STFT magnitude with discarded phase, re-estimated by a few Griffin-Lim
  iterations). Each spoof is loudness-matched to its bona fide twin, so level
  and spectral envelope do not separate the classes; the phase structure does.

The demo's SSL model is :func:`speechbrain_nes2net.lobes.ssl.make_tiny_ssl_model`.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> manifests = prepare_demo_corpus(folder, folder + "/manifests", n_train=2, n_dev=1, n_test=1)
>>> sorted(manifests)
['dev', 'test', 'train']
>>> from speechbrain_nes2net.manifest import read_manifest
>>> read_manifest(manifests["train"])["label"].value_counts().to_dict()
{'bonafide': 2, 'spoof': 2}
"""

import json
import logging
from pathlib import Path

import numpy as np
import scipy.ndimage
import scipy.signal
import soundfile

from speechbrain_nes2net.audio import audio_info
from speechbrain_nes2net.manifest import write_manifest

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}


def speech_like(rng, seconds, sample_rate=SAMPLE_RATE):
    """Synthesises a speech-like voiced signal with random voice settings.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of the random voice (pitch, formants, rhythm).
    seconds : float
        Duration.
    sample_rate : int
        Sampling rate.

    Returns
    -------
    numpy.ndarray
        float64 waveform, peak-normalised to 0.5.
    """
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(90, 250)
    contour = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6.3))
    contour *= 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)  # vibrato
    phase = 2 * np.pi * np.cumsum(f0 * contour) / sample_rate
    n_harmonics = int(4000 // (f0 * 1.1))
    source = sum(np.sin(k * phase) / k for k in range(1, n_harmonics + 1))
    source += 0.03 * rng.standard_normal(n)  # breath noise
    signal = source
    for low, high, bandwidth in ((300, 900, 80), (900, 2400, 120), (2400, 3500, 180)):
        signal = _resonator(signal, rng.uniform(low, high), bandwidth, sample_rate)
    rate = rng.uniform(3, 6)  # syllables per second
    envelope = np.clip(np.sin(2 * np.pi * rate * t / 2 + rng.uniform(0, 3.1)) ** 2 * 1.4, 0, 1)
    signal = signal * (0.2 + 0.8 * envelope)
    return 0.5 * signal / (np.abs(signal).max() + 1e-9)


def _resonator(x, frequency, bandwidth, sample_rate):
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2 * np.pi * frequency / sample_rate
    a = [1.0, -2 * radius * np.cos(theta), radius**2]
    return scipy.signal.lfilter([1 - radius], a, x)


def vocoder_resynthesis(x, rng, n_fft=512, iterations=4):
    """Re-synthesises ``x`` from its STFT magnitude (phase re-estimated).

    A few Griffin-Lim iterations from random phase keep the spectral envelope
    and harmonics but leave phase incoherence, as neural and signal-processing
    vocoders do to different degrees. The result is loudness-matched to ``x``.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform.
    rng : numpy.random.Generator
        Source of the initial random phase.
    n_fft : int
        STFT size (hop n_fft / 4).
    iterations : int
        Griffin-Lim iterations.

    Returns
    -------
    numpy.ndarray
        Waveform of the same length and RMS.
    """
    hop = n_fft // 4
    stft = lambda y: scipy.signal.stft(y, nperseg=n_fft, noverlap=n_fft - hop)[2]  # noqa: E731
    istft = lambda z: scipy.signal.istft(z, nperseg=n_fft, noverlap=n_fft - hop)[1]  # noqa: E731
    magnitude = np.abs(stft(x))
    spec = magnitude * np.exp(2j * np.pi * rng.random(magnitude.shape))
    for _ in range(iterations):
        y = istft(spec)[: len(x)]
        y = np.pad(y, (0, len(x) - len(y)))
        spec = magnitude * np.exp(1j * np.angle(stft(y)))
    y = istft(spec)[: len(x)]
    return _loudness_matched(np.pad(y, (0, len(x) - len(y))), x)


def band_replicated(x, rng, n_fft=512, cutoff_hz=2000.0):
    """Keeps ``x`` below ``cutoff_hz``; above it, noise shaped by the spectral envelope.

    A bandwidth-extension artefact (codecs and some vocoders regenerate the
    high band from a coarse envelope): harmonics vanish above the cutoff, the
    spectral balance stays. The result is loudness-matched to ``x``.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform.
    rng : numpy.random.Generator
        Source of the noise phase.
    n_fft : int
        STFT size (hop n_fft / 4).
    cutoff_hz : float
        Start of the regenerated band.

    Returns
    -------
    numpy.ndarray
        Waveform of the same length and RMS.
    """
    hop = n_fft // 4
    stft = scipy.signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop)[2]
    high = int(cutoff_hz / (SAMPLE_RATE / 2) * (stft.shape[0] - 1))
    envelope = scipy.ndimage.convolve1d(np.abs(stft), np.ones(15) / 15, axis=0, mode="nearest")
    noise = envelope * np.exp(2j * np.pi * rng.random(stft.shape))
    stft[high:] = noise[high:]
    y = scipy.signal.istft(stft, nperseg=n_fft, noverlap=n_fft - hop)[1]
    return _loudness_matched(np.pad(y[: len(x)], (0, max(0, len(x) - len(y)))), x)


def _loudness_matched(y, x):
    """``y`` scaled to the RMS of ``x``."""
    return y * (np.sqrt(np.mean(x**2)) / (np.sqrt(np.mean(y**2)) + 1e-12))


#: The demo's attacks: id -> (method, its settings). A01-A03, phase
#: re-estimation with three STFT sizes, are in every split; A04, another kind
#: of artefact (a regenerated high band), only in the test split: an attack
#: never seen in training or development, as in the real evaluations.
ATTACKS = {
    "A01": (vocoder_resynthesis, {"n_fft": 512, "iterations": 4}),
    "A02": (vocoder_resynthesis, {"n_fft": 1024, "iterations": 8}),
    "A03": (vocoder_resynthesis, {"n_fft": 256, "iterations": 16}),
    "A04": (band_replicated, {"n_fft": 512, "cutoff_hz": 2000.0}),
}
#: Attacks of the training and development splits (the test split has them all).
SEEN_ATTACKS = ("A01", "A02", "A03")


def prepare_demo_corpus(
    data_folder,
    save_folder,
    n_train=150,
    n_dev=40,
    n_test=60,
    min_seconds=1.0,
    max_seconds=2.0,
    seed=1234,
):
    """Writes the synthetic corpus and its manifests (idempotent).

    Each split holds ``n_<split>`` bona fide utterances and as many spoofs
    (their re-syntheses, attacks in turn: A01-A03 in training and
    development, A01-A04 in test; see :data:`ATTACKS`). Splits use disjoint
    random voices.

    Arguments
    ---------
    data_folder : str or Path
        Where the FLAC files go (``<split>/<ID>.flac``).
    save_folder : str or Path
        Where the manifests go (``<split>.csv``).
    n_train, n_dev, n_test : int
        Bona fide utterances per split.
    min_seconds, max_seconds : float
        Range of utterance durations.
    seed : int
        Seed of the whole corpus.

    Returns
    -------
    dict
        Split name -> manifest path.
    """
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    options = dict(
        attacks=sorted(ATTACKS),
        n_train=n_train, n_dev=n_dev, n_test=n_test, min_seconds=min_seconds,
        max_seconds=max_seconds, seed=seed, data_folder=str(data_folder.resolve()),
    )
    manifests = {split: save_folder / f"{split}.csv" for split in SPLIT_SEEDS}
    stamp = save_folder / "demo_options.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == options and all(
        p.is_file() for p in manifests.values()
    ):
        logger.info("Demo corpus already prepared in %s, skipping", save_folder)
        return {split: str(path) for split, path in manifests.items()}
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for split, count in sizes.items():
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
        folder = data_folder / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            seconds = rng.uniform(min_seconds, max_seconds)
            bonafide = speech_like(rng, seconds)
            attacks = sorted(ATTACKS) if split == "test" else SEEN_ATTACKS
            attack = attacks[index % len(attacks)]
            method, settings = ATTACKS[attack]
            spoof = method(bonafide, rng, **settings)
            gain = rng.uniform(0.3, 1.0)  # the same level for both twins
            speaker = f"voice{SPLIT_SEEDS[split]}_{index:04d}"
            for label, wav, attack_id in (("bonafide", bonafide, "-"), ("spoof", spoof, attack)):
                utt_id = f"demo_{split}_{index:04d}_{label}"
                path = folder / f"{utt_id}.flac"
                soundfile.write(path, (gain * wav).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
                rows.append({
                    "ID": utt_id, "duration": audio_info(path).duration,
                    "wav": str(path.resolve()), "label": label, "attack": attack_id,
                    "speaker": speaker, "source": "demo",
                })
        write_manifest(rows, manifests[split])
        logger.info("Demo split %s: %d utterances -> %s", split, len(rows), manifests[split])
    stamp.write_text(json.dumps(options))
    return {split: str(path) for split, path in manifests.items()}
