"""RawBoost data augmentation for raw-waveform anti-spoofing.

RawBoost (Tak et al., ICASSP 2022) distorts a waveform with three primitives on
NumPy waveforms: 1. linear and non-linear convolutive noise
(:func:`lnl_convolutive_noise`), 2. impulsive signal-dependent additive noise
(:func:`isd_additive_noise`), 3. stationary signal-independent coloured additive
noise (:func:`ssi_additive_noise`). :class:`RawBoost` combines them into the
numbered algorithms of the official code (:data:`ALGORITHMS`), with the defaults
of the official Nes2Net training scripts.

Differences from the official implementation, none of which changes the
distribution of the distortions: each filter is applied with its exact
linear-phase delay removed (the official slicing shifts the output by one
sample), the filter peak gain is measured on ``freqz``'s 512-point grid plus
the Nyquist bin (a finer grid for filters longer than 1024 taps), the sum over
the non-linear orders is done in one FFT pass, and an all-zero input never
produces NaN.

Example
-------
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

Authors
 * speechbrain-nes2net contributors
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
#: The primitives each algorithm runs one after the other ...
SERIES_CHAINS = {
    1: ("lnl",), 2: ("isd",), 3: ("ssi",), 4: ("lnl", "isd", "ssi"),
    5: ("lnl", "isd"), 6: ("lnl", "ssi"), 7: ("isd", "ssi"),
}  # fmt: skip
#: ... or on the same input, their outputs summed.
PARALLEL_BRANCHES = {8: ("lnl", "isd"), 9: ("lnl", "isd", "ssi")}

# Band edges are kept this far inside (0, Nyquist), as in the official code,
# so that the window design never receives a cutoff on the band limits.
_EDGE_MARGIN_HZ = 1e-3


def peak_normalize(x):
    """Divides a waveform by its absolute peak when that is above 1 (no clipping).

    Arguments
    ---------
    x : numpy.ndarray
        Waveform.

    Returns
    -------
    numpy.ndarray
        A new array (quieter signals, and all-zero ones, unchanged).

    Example
    -------
    >>> peak_normalize(np.array([0.5, -2.0])).tolist()
    [0.25, -1.0]
    >>> peak_normalize(np.array([0.5, -0.25])).tolist()
    [0.5, -0.25]
    """
    peak = np.max(np.abs(x)) if x.size else 0.0
    return x / peak if peak > 1 else x.copy()


def notch_filter_coeffs(
    rng, n_bands=5, min_f=20.0, max_f=8000.0, min_bw=100.0, max_bw=1000.0, min_coeff=10,
    max_coeff=100, min_g=0.0, max_g=0.0, sample_rate=16000,
):  # fmt: skip
    """Draws a random cascade of band-stop FIR filters (the RawBoost filter).

    Each of the ``n_bands`` stages (official ``nBands``) is a Hamming-windowed
    band-stop filter with centre ~ U(min_f, max_f) Hz, bandwidth ~ U(min_bw,
    max_bw) Hz and an odd number of taps in [min_coeff, max_coeff]; the
    cascade is scaled to a peak magnitude response of G ~ U(min_g, max_g) dB.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness.
    n_bands, min_f, max_f, min_bw, max_bw, min_coeff, max_coeff, min_g, max_g
        As above (official ``minF``, ``maxF``, ...); max_f <= sample_rate / 2.
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
    b = np.ones(1)
    for _ in range(n_bands):
        centre = rng.uniform(min_f, max_f)
        bandwidth = rng.uniform(min_bw, max_bw)
        numtaps = int(rng.uniform(min_coeff, max_coeff))
        numtaps += 1 - numtaps % 2
        low = max(centre - bandwidth / 2, _EDGE_MARGIN_HZ)
        high = min(centre + bandwidth / 2, sample_rate / 2 - _EDGE_MARGIN_HZ)
        if low >= high:  # only for sub-millihertz bands: nothing to notch
            continue
        # Two cutoffs with pass_zero=True (the default) give a band-stop filter.
        b = np.convolve(b, sp_signal.firwin(numtaps, [low, high], window="hamming", fs=sample_rate))
    gain_db = rng.uniform(min_g, max_g)
    return b * (10 ** (gain_db / 20) / _peak_magnitude(b))


def _peak_magnitude(b):
    """Peak of |H| of FIR filter ``b``: 512 bins over [0, Nyquist) as ``freqz`` (the
    official measure), the Nyquist bin too, and a finer grid beyond 1024 taps."""
    n_fft = max(1024, 1 << (len(b) - 1).bit_length())
    return np.abs(np.fft.rfft(b, n_fft)).max()


def fir_filter_sum(signals, filters):
    """Filters each signal with its odd-length linear-phase FIR filter, delay removed, and
    sums the results.

    Arguments
    ---------
    signals : numpy.ndarray
        Signals, shape (n, samples) (or (samples,) for one signal).
    filters : list of numpy.ndarray
        n impulse responses (or one array).

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
    spectrum = np.fft.rfft(signals, n_fft, axis=-1) * np.fft.rfft(padded, n_fft, axis=-1)
    full = np.fft.irfft(spectrum.sum(axis=0), n_fft)
    delay = (longest - 1) // 2
    return full[delay : delay + num_samples]


def lnl_convolutive_noise(
    x, rng, n_f=5, min_g=0.0, max_g=0.0, min_bias_lin_nonlin=5.0, max_bias_lin_nonlin=20.0,
    **design,
):  # fmt: skip
    """Linear and non-linear convolutive noise (RawBoost algo 1).

    Output = sum over k = 1..n_f of notch-cascade_k(x ** k), made zero-mean
    and peak-normalised above 1. The linear term has a peak gain in [min_g,
    max_g] dB, the others one attenuated by the bias (-5 to -20 dB with the
    defaults).

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    n_f : int
        Order of the non-linearity (official ``N_f``; 1 = linear filtering only).
    min_g, max_g : float
        Peak gain range of the linear term (dB).
    min_bias_lin_nonlin, max_bias_lin_nonlin : float
        Attenuation (dB) of the non-linear terms relative to the linear one.
    **design
        The other arguments of :func:`notch_filter_coeffs`.

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
    # The bias shifts both gain bounds down, by different amounts: the bounds
    # can swap (defaults: -5 and -20 dB), so the range is sorted.
    low, high = sorted((min_g - min_bias_lin_nonlin, max_g - max_bias_lin_nonlin))
    filters = [notch_filter_coeffs(rng, min_g=min_g, max_g=max_g, **design)]
    filters += [notch_filter_coeffs(rng, min_g=low, max_g=high, **design) for _ in range(1, n_f)]
    # x, x**2, ... by repeated products (np.power is ~100x slower here).
    powers = np.empty((n_f, len(x)))
    powers[0] = x
    for k in range(1, n_f):
        np.multiply(powers[k - 1], x, out=powers[k])
    y = fir_filter_sum(powers, filters)
    return peak_normalize(y - y.mean())


def isd_additive_noise(x, rng, p=10.0, g_sd=2.0):
    """Impulsive signal-dependent additive noise (RawBoost algo 2).

    beta ~ U(0, p) percent of the samples, drawn without repetition, become
    x + g_sd * x * (u1 * u2) with u1, u2 ~ U(-1, 1); peak-normalised above 1.

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    p : float
        Maximum percentage of samples to corrupt (official ``P``).
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
    count = int(len(x) * rng.uniform(0, p) / 100)
    where = rng.choice(len(x), size=count, replace=False)
    impulses = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
    y[where] += g_sd * x[where] * impulses
    return peak_normalize(y)


def ssi_additive_noise(x, rng, snr_min=10.0, snr_max=40.0, **design):
    """Stationary signal-independent coloured additive noise (RawBoost algo 3).

    White Gaussian noise coloured by a random notch cascade, added at an SNR ~
    U(snr_min, snr_max) dB over the whole signal; not normalised (as official).

    Arguments
    ---------
    x : numpy.ndarray
        Waveform, shape (samples,).
    rng : numpy.random.Generator
        Source of randomness.
    snr_min, snr_max : float
        Range of the signal-to-noise ratio (dB).
    **design
        The arguments of :func:`notch_filter_coeffs`.

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
    noise = fir_filter_sum(noise, notch_filter_coeffs(rng, **design))
    snr_db = rng.uniform(snr_min, snr_max)
    # The official peak normalisation of the noise is skipped: the energy
    # scaling below makes the result independent of the noise's scale.
    noise_norm = _l2_norm(noise)
    if noise_norm == 0:
        return x.copy()
    return x + _l2_norm(x) / (noise_norm * 10 ** (snr_db / 20)) * noise


def _l2_norm(x):
    """Not np.linalg.norm: its BLAS call can stall when BLAS threads compete with workers."""
    return float(np.sqrt(np.sum(np.square(x))))


class RawBoost(torch.nn.Module):
    """RawBoost waveform augmentation (algorithms 0-11), usable from YAML.

    Each utterance of a batch gets its own random distortion of its valid part
    (``lengths``); the padded tail is left untouched. SpeechBrain's
    augmentation interface (``forward(waveforms, lengths)``, so it can be one
    of an ``Augmenter``'s), and a 1-D waveform for a data pipeline, as the
    official recipes apply it.

    Arguments
    ---------
    algo : int
        RawBoost algorithm, see :data:`ALGORITHMS` (0 = identity).
    sample_rate : int
        Sampling rate of the waveforms (Hz).
    n_bands, min_f, max_f, min_bw, max_bw, min_coeff, max_coeff, min_g, max_g
        The notch filters, see :func:`notch_filter_coeffs`.
    min_bias_lin_nonlin, max_bias_lin_nonlin, n_f
        The non-linear terms, see :func:`lnl_convolutive_noise`.
    p, g_sd
        The impulsive noise, see :func:`isd_additive_noise`.
    snr_min, snr_max : float
        SNR range of the coloured additive noise in dB (``SNRmin``, ``SNRmax``).
    lnl_prob, isd_prob, ssi_prob : float
        Probability of applying each primitive in algos 10 and 11
        (``LnL_ratio``, ``ISD_ratio``, ``SSI_ratio``).
    seed : int, optional
        The module's own generator (DataLoader workers would each get a copy
        of it). If None, every call seeds one from torch's global RNG, which
        SpeechBrain and DataLoader seed (differently in every worker).

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
        self, algo=0, sample_rate=16000, n_bands=5, min_f=20.0, max_f=8000.0, min_bw=100.0,
        max_bw=1000.0, min_coeff=10, max_coeff=100, min_g=0.0, max_g=0.0,
        min_bias_lin_nonlin=5.0, max_bias_lin_nonlin=20.0, n_f=5, p=10.0, g_sd=2.0,
        snr_min=10.0, snr_max=40.0, lnl_prob=1.0, isd_prob=1.0, ssi_prob=1.0, seed=None,
    ):  # fmt: skip
        super().__init__()
        if not _is_int(algo) or algo not in ALGORITHMS:
            valid = "; ".join(f"{k} = {v}" for k, v in ALGORITHMS.items())
            raise ValueError(
                f"RawBoost: algo must be an integer in 0..{max(ALGORITHMS)}, "
                f"got {algo!r}. Valid values: {valid}."
            )
        self.algo = int(algo)
        self.sample_rate = sample_rate
        self.filter_args = {
            "n_bands": n_bands, "min_f": min_f, "max_f": max_f, "min_bw": min_bw,
            "max_bw": max_bw, "min_coeff": min_coeff, "max_coeff": max_coeff, "min_g": min_g,
            "max_g": max_g, "sample_rate": sample_rate,
        }  # fmt: skip
        self.lnl_args = {
            **self.filter_args, "n_f": n_f, "min_bias_lin_nonlin": min_bias_lin_nonlin,
            "max_bias_lin_nonlin": max_bias_lin_nonlin,
        }  # fmt: skip
        self.isd_args = {"p": p, "g_sd": g_sd}
        self.ssi_args = {**self.filter_args, "snr_min": snr_min, "snr_max": snr_max}
        self.probs = {"lnl": lnl_prob, "isd": isd_prob, "ssi": ssi_prob}
        self._check_parameters()
        self.seed = seed
        self._generator = None if seed is None else np.random.default_rng(seed)

    def _check_parameters(self):
        """Raises ValueError naming the first inconsistent parameter."""
        f, lnl, isd, ssi = self.filter_args, self.lnl_args, self.isd_args, self.ssi_args
        nyquist = self.sample_rate / 2 if self.sample_rate > 0 else 0
        checks = [
            (self.sample_rate > 0, f"sample_rate={self.sample_rate} must be > 0"),
            (_is_int(f["n_bands"]) and f["n_bands"] >= 1,
             f"n_bands={f['n_bands']} must be an integer >= 1"),
            (0 <= f["min_f"] <= f["max_f"] <= nyquist,
             (f"need 0 <= min_f <= max_f <= sample_rate / 2 = {nyquist}, got "
              f"min_f={f['min_f']}, max_f={f['max_f']}")),
            (0 < f["min_bw"] <= f["max_bw"],
             f"need 0 < min_bw <= max_bw, got min_bw={f['min_bw']}, max_bw={f['max_bw']}"),
            (_is_int(f["min_coeff"]) and _is_int(f["max_coeff"])
             and 1 <= f["min_coeff"] <= f["max_coeff"],
             ("need integers 1 <= min_coeff <= max_coeff, got "
              f"min_coeff={f['min_coeff']}, max_coeff={f['max_coeff']}")),
            (f["min_g"] <= f["max_g"],
             f"need min_g <= max_g, got min_g={f['min_g']}, max_g={f['max_g']}"),
            (lnl["min_bias_lin_nonlin"] <= lnl["max_bias_lin_nonlin"],
             ("need min_bias_lin_nonlin <= max_bias_lin_nonlin, got "
              f"{lnl['min_bias_lin_nonlin']} > {lnl['max_bias_lin_nonlin']}")),
            (_is_int(lnl["n_f"]) and lnl["n_f"] >= 1, f"n_f={lnl['n_f']} must be an integer >= 1"),
            (0 <= isd["p"] <= 100, f"p={isd['p']} must be a percentage in [0, 100]"),
            (isd["g_sd"] >= 0, f"g_sd={isd['g_sd']} must be >= 0"),
            (ssi["snr_min"] <= ssi["snr_max"],
             f"need snr_min <= snr_max, got snr_min={ssi['snr_min']}, snr_max={ssi['snr_max']}"),
        ] + [
            (0 <= prob <= 1, f"{name}_prob={prob} must be a probability in [0, 1]")
            for name, prob in self.probs.items()
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RawBoost: {message}.")

    def extra_repr(self):
        """The algorithm and seed, shown in the module's repr."""
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
                "RawBoost expects waveforms of shape (samples,), (batch, samples) "
                f"or (batch, samples, channels), got {tuple(waveforms.shape)}"
            )
        rng = self._rng()
        # The work is done in numpy: torch's intra-op threads gain nothing on
        # these small copies and stall when the cores are busy (DataLoader).
        cpu = waveforms.detach().cpu()
        signals = (cpu.float() if cpu.dtype == torch.bfloat16 else cpu).numpy().astype(np.float64)
        channels = signals.shape[2] if signals.ndim == 3 else 1
        batch = signals.reshape(1, -1) if signals.ndim == 1 else signals  # views: edited in place
        if signals.ndim == 3:  # a copy, (batch * channels, samples)
            batch = signals.transpose(0, 2, 1).reshape(-1, signals.shape[1])
        num_samples = batch.shape[1]
        valid = np.full(len(batch), num_samples)
        if lengths is not None:
            relative = torch.as_tensor(lengths).detach().cpu().double().numpy().reshape(-1)
            valid = np.clip(np.round(relative * num_samples), 0, num_samples).astype(int)
            valid = np.repeat(valid, channels)
        for row, length in zip(batch, valid):
            if length > 0:
                row[:length] = self.augment_utterance(row[:length], rng)
        if signals.ndim == 3:
            signals = batch.reshape(signals.shape[0], channels, num_samples).transpose(0, 2, 1)
        dtype = waveforms.dtype if waveforms.is_floating_point() else torch.float32
        numpy_dtype = {torch.float16: np.float16, torch.float32: np.float32}.get(dtype, np.float64)
        return torch.from_numpy(signals.astype(numpy_dtype)).to(waveforms.device, dtype)

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
        """
        rng = self._rng() if rng is None else rng
        x = np.asarray(x, dtype=np.float64)
        if self.algo in PARALLEL_BRANCHES:
            return self._parallel(x, PARALLEL_BRANCHES[self.algo], rng)
        if self.algo in (10, 11):
            names = ("lnl", "isd") if self.algo == 10 else ("lnl", "isd", "ssi")
            chosen = [name for name in names if rng.random() < self.probs[name]]
            if len(chosen) == 2 and self.algo == 10:
                return self._parallel(x, chosen, rng)
            return self._series(x, chosen, rng)
        return self._series(x, SERIES_CHAINS.get(self.algo, ()), rng)

    def _primitive(self, name, x, rng):
        """One primitive with this module's settings."""
        if name == "lnl":
            return lnl_convolutive_noise(x, rng, **self.lnl_args)
        if name == "isd":
            return isd_additive_noise(x, rng, **self.isd_args)
        return ssi_additive_noise(x, rng, **self.ssi_args)

    def _series(self, x, names, rng):
        """The primitives one after the other (a copy of ``x`` when there are none)."""
        for name in names:
            x = self._primitive(name, x, rng)
        return x if names else x.copy()

    def _parallel(self, x, names, rng):
        """The primitives on the same input, summed, peak-normalised above 1."""
        return peak_normalize(sum(self._primitive(name, x, rng) for name in names))

    def _rng(self):
        """The module's generator, or one drawn from torch's global RNG (seeded by
        SpeechBrain, and differently in every DataLoader worker)."""
        if self._generator is not None:
            return self._generator
        return np.random.default_rng(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())


def _is_int(value):
    """An integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
