"""RawBoost data augmentation for raw-waveform anti-spoofing.

RawBoost (Tak et al., "RawBoost: A Raw Data Boosting and Augmentation Method
applied to Automatic Speaker Verification Anti-Spoofing", ICASSP 2022) distorts
a waveform with three signal-processing primitives
(:mod:`speechbrain_nes2net.training.rawboost_noise`): 1. linear and non-linear
convolutive noise, 2. impulsive signal-dependent additive noise, 3. stationary
signal-independent coloured additive noise.

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

from speechbrain_nes2net.training.rawboost_noise import (
    isd_additive_noise,
    lnl_convolutive_noise,
    peak_normalize,
    ssi_additive_noise,
)

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


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
