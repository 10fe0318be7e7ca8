"""RawBoost data augmentation for raw-waveform anti-spoofing.

RawBoost (Tak et al., "RawBoost: A Raw Data Boosting and Augmentation Method
applied to Automatic Speaker Verification Anti-Spoofing", ICASSP 2022) distorts
a waveform with three signal-processing primitives:

1. linear and non-linear convolutive noise (:func:`lnl_convolutive_noise`):
   the sum of the first ``n_f`` powers of the signal, each filtered by a random
   cascade of ``n_bands`` notch (band-stop) FIR filters;
2. impulsive signal-dependent additive noise (:func:`isd_additive_noise`):
   up to ``p`` percent of the samples get a multiplicative random impulse;
3. stationary signal-independent additive noise (:func:`ssi_additive_noise`):
   white noise coloured by a random notch cascade, added at an SNR drawn in
   ``[snr_min, snr_max]`` dB.

The numbered algorithms of the official code combine them (:data:`ALGORITHMS`):

====  ====================================================================
algo  processing
====  ====================================================================
0     none (exact identity)
1-3   primitive 1, 2 or 3
4     1 -> 2 -> 3 in series
5     1 -> 2 in series
6     1 -> 3 in series
7     2 -> 3 in series
8     1 || 2 in parallel: sum of both outputs, peak-normalised if above 1
9     1 || 2 || 3 in parallel, same
10    1 with probability ``lnl_prob`` and/or 2 with probability ``isd_prob``
      (both drawn: parallel as in 8; one: that one alone; none: unchanged)
11    1, 2, 3 in series, each applied with its own probability
      (``lnl_prob``, ``isd_prob``, ``ssi_prob``; ASVspoof code of Nes2Net)
====  ====================================================================

Defaults are those of the official Nes2Net training scripts. The recipes use
algo 8 (CtrSVDD), 4 (ASVspoof 2019 LA -> 2021 LA) and 3 (-> 2021 DF).

Differences from the official implementation, none of which changes the
distribution of the distortions: each filter is applied with its exact
linear-phase delay removed (the official slicing shifts the output by one
sample), the filter peak gain is measured on ``freqz``'s 512-point grid plus
the Nyquist bin (a finer grid for filters longer than 1024 taps), the sum over
the non-linear orders is done in one FFT pass, and an all-zero input never
produces NaN.

Example
-------
>>> import torch
>>> augment = RawBoost(algo=8, seed=0)
>>> clean = torch.rand(2, 16000) - 0.5
>>> clean[1, 8000:] = 0.0  # padding of a half-length utterance
>>> noisy = augment(clean, lengths=torch.tensor([1.0, 0.5]))
>>> noisy.shape, noisy.dtype
(torch.Size([2, 16000]), torch.float32)
>>> bool((noisy[1, 8000:] == 0).all())  # padded tail untouched
True
>>> bool((noisy[1, :8000] != clean[1, :8000]).any())
True
"""

import numpy as np
import torch
from scipy import fft as sp_fft
from scipy import signal as sp_signal

ALGORITHMS = {
    0: "no augmentation",
    1: "linear and non-linear convolutive noise (LnL)",
    2: "impulsive signal-dependent additive noise (ISD)",
    3: "stationary signal-independent coloured additive noise (SSI)",
    4: "LnL -> ISD -> SSI in series",
    5: "LnL -> ISD in series",
    6: "LnL -> SSI in series",
    7: "ISD -> SSI in series",
    8: "LnL || ISD in parallel (sum, peak-normalised)",
    9: "LnL || ISD || SSI in parallel (sum, peak-normalised)",
    10: "LnL and/or ISD, each with its own probability (parallel if both)",
    11: "LnL -> ISD -> SSI in series, each with its own probability",
}

# The combination table: which primitives run one after the other ...
SERIES_CHAINS = {
    1: ("lnl",),
    2: ("isd",),
    3: ("ssi",),
    4: ("lnl", "isd", "ssi"),
    5: ("lnl", "isd"),
    6: ("lnl", "ssi"),
    7: ("isd", "ssi"),
}
# ... and which run on the same input, their outputs summed.
PARALLEL_BRANCHES = {
    8: ("lnl", "isd"),
    9: ("lnl", "isd", "ssi"),
}

_NUMPY_DTYPES = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}

# Band edges are kept this far inside (0, Nyquist), as in the official code,
# so that the window design never receives a cutoff on the band limits.
_EDGE_MARGIN_HZ = 1e-3


def peak_normalize(x, always=False):
    """Divides a waveform by its absolute peak.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform.
    always : bool
        If True, always scale the peak to 1; otherwise only when the peak is
        above 1 (prevents clipping, leaves quieter signals as they are).
        An all-zero signal is returned unchanged.

    Returns
    -------
    numpy.ndarray
        The (possibly) rescaled waveform, a new array.

    Example
    -------
    >>> peak_normalize(np.array([0.5, -2.0])).tolist()
    [0.25, -1.0]
    >>> peak_normalize(np.array([0.5, -0.25])).tolist()
    [0.5, -0.25]
    >>> peak_normalize(np.array([0.5, -0.25]), always=True).tolist()
    [1.0, -0.5]
    """
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak > 0 and (always or peak > 1):
        return x / peak
    return x.copy()


def notch_filter_coeffs(
    rng,
    n_bands=5,
    min_f=20.0,
    max_f=8000.0,
    min_bw=100.0,
    max_bw=1000.0,
    min_coeff=10,
    max_coeff=100,
    min_g=0.0,
    max_g=0.0,
    sample_rate=16000,
):
    """Draws a random cascade of band-stop FIR filters (the RawBoost filter).

    Each of the ``n_bands`` stages is a Hamming-windowed band-stop FIR filter
    with centre frequency ~ U(min_f, max_f) Hz, bandwidth ~ U(min_bw, max_bw)
    Hz and an odd number of taps drawn in [min_coeff, max_coeff] (band-stop
    designs need an odd length). The cascade is scaled so that its peak
    magnitude response equals G ~ U(min_g, max_g) dB.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness.
    n_bands : int
        Number of notch stages in the cascade.
    min_f, max_f : float
        Range of the notch centre frequencies (Hz); max_f <= sample_rate / 2.
    min_bw, max_bw : float
        Range of the notch bandwidths (Hz).
    min_coeff, max_coeff : int
        Range of the number of taps per stage.
    min_g, max_g : float
        Range of the peak gain of the cascade (dB).
    sample_rate : int
        Sampling rate of the signal to filter (Hz).

    Returns
    -------
    numpy.ndarray
        The impulse response of the cascade; odd length, linear phase.

    Example
    -------
    >>> b = notch_filter_coeffs(np.random.default_rng(0))
    >>> len(b) % 2
    1
    >>> bool(np.isclose(np.abs(np.fft.rfft(b, 4096)).max(), 1.0, atol=0.02))
    True
    """
    nyquist = sample_rate / 2
    b = np.ones(1)
    for _ in range(n_bands):
        centre = rng.uniform(min_f, max_f)
        bandwidth = rng.uniform(min_bw, max_bw)
        numtaps = int(rng.uniform(min_coeff, max_coeff))
        numtaps += 1 - numtaps % 2
        low = max(centre - bandwidth / 2, _EDGE_MARGIN_HZ)
        high = min(centre + bandwidth / 2, nyquist - _EDGE_MARGIN_HZ)
        if low >= high:  # only for sub-millihertz bands: nothing to notch
            continue
        # Two cutoffs with pass_zero=True (the default) give a band-stop filter.
        stage = sp_signal.firwin(
            numtaps, [low, high], window="hamming", fs=sample_rate
        )
        b = np.convolve(b, stage)
    gain_db = rng.uniform(min_g, max_g)
    n_fft = max(1024, 1 << (len(b) - 1).bit_length())
    peak = np.abs(np.fft.rfft(b, n_fft)).max()
    return b * (10 ** (gain_db / 20) / peak)


def fir_filter_sum(signals, filters):
    """Filters each signal with its FIR filter and sums the results.

    The filters' linear-phase delay is removed, so each output sample is
    aligned with its input sample ("same"-size convolution).

    Arguments
    ---------
    signals : numpy.ndarray
        Signals, shape (n, samples) (or (samples,) for one signal).
    filters : list of numpy.ndarray
        n odd-length linear-phase impulse responses (or one array).

    Returns
    -------
    numpy.ndarray
        sum_k (signals[k] * filters[k]), shape (samples,).

    Example
    -------
    >>> x = np.arange(5.0)
    >>> fir_filter_sum(x, np.array([0.0, 1.0, 0.0])).round(6).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> both = fir_filter_sum(np.stack([x, x]), [np.ones(1), np.ones(3)])
    >>> both.round(6).tolist()  # x + (moving sum of 3 around each sample)
    [1.0, 4.0, 8.0, 12.0, 11.0]
    """
    signals = np.atleast_2d(signals)
    if isinstance(filters, np.ndarray):
        filters = [filters]
    num_samples = signals.shape[-1]
    longest = max(len(b) for b in filters)
    # Centre every filter inside the longest one: all share one delay, so
    # the sum can be done in the frequency domain with a single inverse FFT.
    padded = np.zeros((len(filters), longest))
    for row, b in zip(padded, filters):
        start = (longest - len(b)) // 2
        row[start : start + len(b)] = b
    n_fft = sp_fft.next_fast_len(num_samples + longest - 1, real=True)
    # numpy's FFT: faster than scipy.fft on stacked rows with zero-padding.
    spectrum = np.fft.rfft(signals, n_fft, axis=-1) * np.fft.rfft(
        padded, n_fft, axis=-1
    )
    full = np.fft.irfft(spectrum.sum(axis=0), n_fft)
    delay = (longest - 1) // 2
    return full[delay : delay + num_samples]


def lnl_convolutive_noise(
    x,
    rng,
    n_f=5,
    n_bands=5,
    min_f=20.0,
    max_f=8000.0,
    min_bw=100.0,
    max_bw=1000.0,
    min_coeff=10,
    max_coeff=100,
    min_g=0.0,
    max_g=0.0,
    min_bias_lin_nonlin=5.0,
    max_bias_lin_nonlin=20.0,
    sample_rate=16000,
):
    """Linear and non-linear convolutive noise (RawBoost algo 1).

    Output = sum over k = 1..n_f of notch-cascade_k(x ** k), made zero-mean
    and peak-normalised if its peak exceeds 1. The linear term (k = 1) has a
    peak gain in [min_g, max_g] dB; the non-linear terms are attenuated by the
    bias: gain between min_g - min_bias_lin_nonlin and
    max_g - max_bias_lin_nonlin dB (-5 to -20 dB with the defaults).

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    n_f : int
        Order of the non-linearity (1 = linear filtering only).
    n_bands, min_f, max_f, min_bw, max_bw, min_coeff, max_coeff, min_g, max_g
        Notch cascade parameters, see :func:`notch_filter_coeffs`.
    min_bias_lin_nonlin, max_bias_lin_nonlin : float
        Attenuation (dB) of the non-linear terms relative to the linear one.
    sample_rate : int
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        Distorted waveform, shape (samples,).

    Example
    -------
    >>> x = np.sin(np.linspace(0, 200, 16000)) * 0.5
    >>> y = lnl_convolutive_noise(x, np.random.default_rng(0))
    >>> y.shape, bool(np.abs(y).max() <= 1.0)
    ((16000,), True)
    """
    design = dict(
        n_bands=n_bands,
        min_f=min_f,
        max_f=max_f,
        min_bw=min_bw,
        max_bw=max_bw,
        min_coeff=min_coeff,
        max_coeff=max_coeff,
        sample_rate=sample_rate,
    )
    # The bias shifts both gain bounds down, by different amounts: the bounds
    # can swap (defaults: -5 and -20 dB), so the range is sorted.
    nonlin_g = sorted(
        (min_g - min_bias_lin_nonlin, max_g - max_bias_lin_nonlin)
    )
    filters = [notch_filter_coeffs(rng, min_g=min_g, max_g=max_g, **design)]
    for _ in range(1, n_f):
        filters.append(
            notch_filter_coeffs(
                rng, min_g=nonlin_g[0], max_g=nonlin_g[1], **design
            )
        )
    # x, x**2, ... by repeated products (np.power is ~100x slower here).
    powers = np.empty((n_f, len(x)))
    powers[0] = x
    for k in range(1, n_f):
        np.multiply(powers[k - 1], x, out=powers[k])
    y = fir_filter_sum(powers, filters)
    return peak_normalize(y - y.mean(), always=False)


def isd_additive_noise(x, rng, p=10.0, g_sd=2.0):
    """Impulsive signal-dependent additive noise (RawBoost algo 2).

    A fraction beta ~ U(0, p) percent of the samples, chosen at random without
    repetition, become x + g_sd * x * (u1 * u2) with u1, u2 ~ U(-1, 1); the
    result is peak-normalised if its peak exceeds 1.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    p : float
        Maximum percentage of samples to corrupt.
    g_sd : float
        Gain of the impulses relative to the signal.

    Returns
    -------
    numpy.ndarray
        Distorted waveform, shape (samples,).

    Example
    -------
    >>> x = np.full(1000, 0.1)
    >>> y = isd_additive_noise(x, np.random.default_rng(0))
    >>> bool(0 < np.count_nonzero(y != x) <= 100)
    True
    """
    y = x.copy()
    beta = rng.uniform(0, p)
    count = int(len(x) * beta / 100)
    where = rng.choice(len(x), size=count, replace=False)
    impulses = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
    y[where] += g_sd * x[where] * impulses
    return peak_normalize(y, always=False)


def ssi_additive_noise(
    x,
    rng,
    snr_min=10.0,
    snr_max=40.0,
    n_bands=5,
    min_f=20.0,
    max_f=8000.0,
    min_bw=100.0,
    max_bw=1000.0,
    min_coeff=10,
    max_coeff=100,
    min_g=0.0,
    max_g=0.0,
    sample_rate=16000,
):
    """Stationary signal-independent coloured additive noise (RawBoost algo 3).

    White Gaussian noise is coloured by a random notch cascade and added at an
    SNR ~ U(snr_min, snr_max) dB (energy ratio over the whole signal). The
    output is not normalised, as in the official code.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    snr_min, snr_max : float
        Range of the signal-to-noise ratio (dB).
    n_bands, min_f, max_f, min_bw, max_bw, min_coeff, max_coeff, min_g, max_g
        Notch cascade parameters, see :func:`notch_filter_coeffs`.
    sample_rate : int
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        Noisy waveform, shape (samples,).

    Example
    -------
    >>> x = np.sin(np.linspace(0, 200, 16000))
    >>> y = ssi_additive_noise(x, np.random.default_rng(0))
    >>> snr = 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2))
    >>> bool(10 <= snr <= 40)
    True
    """
    noise = rng.standard_normal(len(x))
    b = notch_filter_coeffs(
        rng,
        n_bands=n_bands,
        min_f=min_f,
        max_f=max_f,
        min_bw=min_bw,
        max_bw=max_bw,
        min_coeff=min_coeff,
        max_coeff=max_coeff,
        min_g=min_g,
        max_g=max_g,
        sample_rate=sample_rate,
    )
    noise = fir_filter_sum(noise, b)
    snr_db = rng.uniform(snr_min, snr_max)
    # The official peak normalisation of the noise is skipped: the energy
    # scaling below makes the result independent of the noise's scale.
    noise_norm = _l2_norm(noise)
    if noise_norm == 0:
        return x.copy()
    scale = _l2_norm(x) / (noise_norm * 10 ** (snr_db / 20))
    return x + scale * noise


class RawBoost(torch.nn.Module):
    """RawBoost waveform augmentation (algorithms 0-11), usable from YAML.

    Each utterance of a batch gets its own random distortion, computed on its
    valid part only (``lengths``); the padded tail is left untouched. The
    module has no parameters and behaves the same in train and eval mode:
    apply it only where the recipe wants augmentation. It follows the
    SpeechBrain augmentation interface, ``forward(waveforms, lengths)`` ->
    waveforms of the same shape, so it can be one of the ``augmentations`` of
    ``speechbrain.augment.augmenter.Augmenter``. A 1-D waveform is accepted
    too, for per-utterance use in a data pipeline (DataLoader workers), which
    is how the official recipes apply it and keeps the GPU loop free.

    Arguments
    ---------
    algo : int
        RawBoost algorithm, see :data:`ALGORITHMS` (0 = identity).
    sample_rate : int
        Sampling rate of the waveforms (Hz).
    n_bands : int
        Notch stages per random filter (official ``nBands``).
    min_f, max_f : float
        Range of notch centre frequencies in Hz (``minF``, ``maxF``).
    min_bw, max_bw : float
        Range of notch bandwidths in Hz (``minBW``, ``maxBW``).
    min_coeff, max_coeff : int
        Range of FIR taps per notch (``minCoeff``, ``maxCoeff``).
    min_g, max_g : float
        Range of filter peak gain in dB (``minG``, ``maxG``).
    min_bias_lin_nonlin, max_bias_lin_nonlin : float
        Extra attenuation of the non-linear terms in dB
        (``minBiasLinNonLin``, ``maxBiasLinNonLin``).
    n_f : int
        Order of the convolutive non-linearity (``N_f``).
    p : float
        Maximum percentage of samples hit by impulsive noise (``P``).
    g_sd : float
        Impulsive noise gain (``g_sd``).
    snr_min, snr_max : float
        SNR range of the coloured additive noise in dB (``SNRmin``, ``SNRmax``).
    lnl_prob, isd_prob, ssi_prob : float
        Probability of applying each primitive in algos 10 and 11
        (``LnL_ratio``, ``ISD_ratio``, ``SSI_ratio``).
    seed : int, optional
        If given, the module draws from its own generator seeded with it
        (reproducible; note that DataLoader workers would each get a copy of
        the same generator). If None, every call draws a fresh generator from
        torch's global RNG, so ``speechbrain.utils.seed.seed_everything`` and
        the per-worker seeding of DataLoader apply.

    Example
    -------
    >>> augment = RawBoost(algo=4, seed=1)
    >>> augment(torch.rand(3, 8000) - 0.5).shape
    torch.Size([3, 8000])
    >>> augment(torch.rand(8000) - 0.5).shape
    torch.Size([8000])
    >>> RawBoost(algo=12)
    Traceback (most recent call last):
    ...
    ValueError: RawBoost: algo must be an integer in 0..11, got 12. ...
    """

    def __init__(
        self,
        algo=0,
        sample_rate=16000,
        n_bands=5,
        min_f=20.0,
        max_f=8000.0,
        min_bw=100.0,
        max_bw=1000.0,
        min_coeff=10,
        max_coeff=100,
        min_g=0.0,
        max_g=0.0,
        min_bias_lin_nonlin=5.0,
        max_bias_lin_nonlin=20.0,
        n_f=5,
        p=10.0,
        g_sd=2.0,
        snr_min=10.0,
        snr_max=40.0,
        lnl_prob=1.0,
        isd_prob=1.0,
        ssi_prob=1.0,
        seed=None,
    ):
        super().__init__()
        if not _is_int(algo) or algo not in ALGORITHMS:
            valid = "; ".join(f"{k} = {v}" for k, v in ALGORITHMS.items())
            raise ValueError(
                f"RawBoost: algo must be an integer in 0..{max(ALGORITHMS)}, "
                f"got {algo!r}. Valid values: {valid}."
            )
        self.algo = int(algo)
        self.sample_rate = sample_rate
        self.filter_args = dict(
            n_bands=n_bands,
            min_f=min_f,
            max_f=max_f,
            min_bw=min_bw,
            max_bw=max_bw,
            min_coeff=min_coeff,
            max_coeff=max_coeff,
            min_g=min_g,
            max_g=max_g,
            sample_rate=sample_rate,
        )
        self.lnl_args = dict(
            self.filter_args,
            n_f=n_f,
            min_bias_lin_nonlin=min_bias_lin_nonlin,
            max_bias_lin_nonlin=max_bias_lin_nonlin,
        )
        self.isd_args = dict(p=p, g_sd=g_sd)
        self.ssi_args = dict(self.filter_args, snr_min=snr_min, snr_max=snr_max)
        self.probs = dict(lnl=lnl_prob, isd=isd_prob, ssi=ssi_prob)
        self._check_parameters()
        self.seed = seed
        self._generator = None if seed is None else np.random.default_rng(seed)

    def _check_parameters(self):
        """Raises ValueError naming the first inconsistent parameter."""
        f, lnl = self.filter_args, self.lnl_args
        isd, ssi = self.isd_args, self.ssi_args
        nyquist = self.sample_rate / 2 if self.sample_rate > 0 else 0
        checks = [
            (
                self.sample_rate > 0,
                f"sample_rate={self.sample_rate} must be > 0",
            ),
            (
                _is_int(f["n_bands"]) and f["n_bands"] >= 1,
                f"n_bands={f['n_bands']} must be an integer >= 1",
            ),
            (
                0 <= f["min_f"] <= f["max_f"] <= nyquist,
                f"need 0 <= min_f <= max_f <= sample_rate / 2 = {nyquist}, got "
                f"min_f={f['min_f']}, max_f={f['max_f']}",
            ),
            (
                0 < f["min_bw"] <= f["max_bw"],
                f"need 0 < min_bw <= max_bw, got min_bw={f['min_bw']}, "
                f"max_bw={f['max_bw']}",
            ),
            (
                _is_int(f["min_coeff"])
                and _is_int(f["max_coeff"])
                and 1 <= f["min_coeff"] <= f["max_coeff"],
                f"need integers 1 <= min_coeff <= max_coeff, got "
                f"min_coeff={f['min_coeff']}, max_coeff={f['max_coeff']}",
            ),
            (
                f["min_g"] <= f["max_g"],
                f"need min_g <= max_g, got min_g={f['min_g']}, "
                f"max_g={f['max_g']}",
            ),
            (
                lnl["min_bias_lin_nonlin"] <= lnl["max_bias_lin_nonlin"],
                "need min_bias_lin_nonlin <= max_bias_lin_nonlin, got "
                f"{lnl['min_bias_lin_nonlin']} > {lnl['max_bias_lin_nonlin']}",
            ),
            (
                _is_int(lnl["n_f"]) and lnl["n_f"] >= 1,
                f"n_f={lnl['n_f']} must be an integer >= 1",
            ),
            (
                0 <= isd["p"] <= 100,
                f"p={isd['p']} must be a percentage in [0, 100]",
            ),
            (isd["g_sd"] >= 0, f"g_sd={isd['g_sd']} must be >= 0"),
            (
                ssi["snr_min"] <= ssi["snr_max"],
                f"need snr_min <= snr_max, got snr_min={ssi['snr_min']}, "
                f"snr_max={ssi['snr_max']}",
            ),
        ]
        checks += [
            (
                0 <= prob <= 1,
                f"{name}_prob={prob} must be a probability in [0, 1]",
            )
            for name, prob in self.probs.items()
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RawBoost: {message}.")

    def extra_repr(self):
        return f"algo={self.algo} ({ALGORITHMS[self.algo]}), seed={self.seed}"

    def forward(self, waveforms, lengths=None):
        """Augments a batch of waveforms (or a single waveform).

        Arguments
        ---------
        waveforms : torch.Tensor
            Shape (batch, samples), (samples,) or (batch, samples, channels);
            channels are augmented independently.
        lengths : torch.Tensor, optional
            Relative lengths in [0, 1], shape (batch,); None = all full.

        Returns
        -------
        torch.Tensor
            Augmented waveforms, same shape, dtype and device as the input;
            the padded tail of each utterance is unchanged.
        """
        if self.algo == 0:
            return waveforms
        if waveforms.dim() not in (1, 2, 3):
            raise ValueError(
                "RawBoost expects waveforms of shape (samples,), "
                "(batch, samples) "
                f"or (batch, samples, channels), got {tuple(waveforms.shape)}"
            )
        rng = self._rng()
        # The work is done in numpy: torch's intra-op threads gain nothing on
        # these small copies and stall when the cores are busy (DataLoader).
        cpu = waveforms.detach().cpu()
        if cpu.dtype == torch.bfloat16:  # no numpy counterpart
            cpu = cpu.float()
        signals = cpu.numpy().astype(np.float64)
        if signals.ndim == 1:
            batch = signals[np.newaxis]
        elif signals.ndim == 3:
            batch = signals.transpose(0, 2, 1).reshape(-1, signals.shape[1])
        else:
            batch = signals
        num_samples = batch.shape[1]
        if lengths is None:
            valid = np.full(len(batch), num_samples)
        else:
            lengths = torch.as_tensor(lengths).detach().cpu().double()
            valid = np.round(lengths.numpy().reshape(-1) * num_samples)
            valid = np.clip(valid, 0, num_samples).astype(int)
            if signals.ndim == 3:
                valid = np.repeat(valid, signals.shape[2])
        for row, length in zip(batch, valid):
            if length > 0:
                row[:length] = self.augment_utterance(row[:length], rng)
        if signals.ndim == 3:
            batch = batch.reshape(
                signals.shape[0], signals.shape[2], num_samples
            ).transpose(0, 2, 1)
        dtype = (
            waveforms.dtype if waveforms.is_floating_point() else torch.float32
        )
        result = batch.reshape(signals.shape)
        result = result.astype(_NUMPY_DTYPES.get(dtype, np.float64))
        return torch.from_numpy(result).to(waveforms.device, dtype)

    def augment_utterance(self, x, rng=None):
        """Applies the configured algorithm to one float64 numpy waveform.

        Arguments
        ---------
        x : numpy.ndarray
            Waveform, shape (samples,).
        rng : numpy.random.Generator, optional
            Source of randomness; default as described for ``seed``.

        Returns
        -------
        numpy.ndarray
            Augmented waveform, shape (samples,).

        Example
        -------
        >>> augment = RawBoost(algo=2, seed=0)
        >>> x = np.full(1000, 0.1)
        >>> int(np.count_nonzero(augment.augment_utterance(x) != x)) <= 100
        True
        """
        rng = self._rng() if rng is None else rng
        x = np.asarray(x, dtype=np.float64)
        if self.algo in SERIES_CHAINS:
            return self._series(x, SERIES_CHAINS[self.algo], rng)
        if self.algo in PARALLEL_BRANCHES:
            return self._parallel(x, PARALLEL_BRANCHES[self.algo], rng)
        if self.algo == 10:
            chosen = [k for k in ("lnl", "isd") if rng.random() < self.probs[k]]
            if len(chosen) == 2:
                return self._parallel(x, chosen, rng)
            return self._series(x, chosen, rng)
        if self.algo == 11:
            chosen = [
                k for k in ("lnl", "isd", "ssi") if rng.random() < self.probs[k]
            ]
            return self._series(x, chosen, rng)
        return x.copy()

    def _primitive(self, name, x, rng):
        if name == "lnl":
            return lnl_convolutive_noise(x, rng, **self.lnl_args)
        if name == "isd":
            return isd_additive_noise(x, rng, **self.isd_args)
        return ssi_additive_noise(x, rng, **self.ssi_args)

    def _series(self, x, names, rng):
        for name in names:
            x = self._primitive(name, x, rng)
        return x.copy() if not names else x

    def _parallel(self, x, names, rng):
        total = sum(self._primitive(name, x, rng) for name in names)
        return peak_normalize(total, always=False)

    def _rng(self):
        if self._generator is not None:
            return self._generator
        # One draw from torch's global RNG: seeded by SpeechBrain, and seeded
        # differently in every DataLoader worker.
        return np.random.default_rng(
            torch.randint(0, 2**62, (1,), dtype=torch.int64).item()
        )


def _l2_norm(x):
    # Not np.linalg.norm: its BLAS call can stall for milliseconds when
    # BLAS threads compete with DataLoader workers for the cores.
    return float(np.sqrt(np.sum(np.square(x))))


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
