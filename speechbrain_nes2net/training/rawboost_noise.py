"""The three signal-processing primitives of RawBoost, on NumPy waveforms.

1. linear and non-linear convolutive noise (:func:`lnl_convolutive_noise`):
   the sum of the first ``n_f`` powers of the signal, each filtered by a random
   cascade of ``n_bands`` notch (band-stop) FIR filters;
2. impulsive signal-dependent additive noise (:func:`isd_additive_noise`):
   up to ``p`` percent of the samples get a multiplicative random impulse;
3. stationary signal-independent additive noise (:func:`ssi_additive_noise`):
   white noise coloured by a random notch cascade, added at an SNR drawn in
   ``[snr_min, snr_max]`` dB.

:class:`~speechbrain_nes2net.training.rawboost.RawBoost` combines them into the
numbered algorithms of the official code.

Authors
 * speechbrain-nes2net contributors
"""

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sp_signal

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
    return b * (10 ** (gain_db / 20) / _peak_magnitude(b))


def _peak_magnitude(b):
    """Peak of |H| of FIR filter ``b``: 512 bins over [0, Nyquist) as ``freqz``
    (the official measure), the Nyquist bin too, and a finer grid for filters
    longer than 1024 taps."""
    n_fft = max(1024, 1 << (len(b) - 1).bit_length())
    return np.abs(np.fft.rfft(b, n_fft)).max()


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


def _l2_norm(x):
    # Not np.linalg.norm: its BLAS call can stall for milliseconds when
    # BLAS threads compete with DataLoader workers for the cores.
    return float(np.sqrt(np.sum(np.square(x))))
