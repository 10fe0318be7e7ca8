"""On-disk cache of frozen SSL hidden states, one ``.npy`` file per input waveform.

A frozen SSL model's states of an input never change, yet an epoch spends most
of its time recomputing them. Entries are keyed by content, so a stale one
cannot be served: the folder by a fingerprint of the SSL model, the waveform
normalisation and the storage dtype (another model, or the same one retrained,
gets another folder), an entry by a hash of the exact samples fed to the model
(an edited file or another crop is a miss, not a wrong hit). An entry holds the
valid frames only, (layers, frames, dim), whatever batch it was computed in.

Example
-------
>>> import tempfile, torch
>>> cache = FeatureCache(tempfile.mkdtemp(), fingerprint="toy")
>>> double = lambda wavs, lengths: torch.stack([wavs[:, ::160], 2 * wavs[:, ::160]])[..., None]
>>> wavs, lengths = torch.randn(2, 1600), torch.tensor([1.0, 0.5])
>>> states, _ = cache.states(wavs, lengths, double)
>>> cache.misses, cache.hits
(2, 0)
>>> again, _ = cache.states(wavs, lengths, double)
>>> cache.hits, torch.allclose(states, again, atol=1e-2)
(2, True)
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from speechbrain_nes2net.lobes.ssl import ssl_frame_lengths

DTYPES = {"float16": np.float16, "float32": np.float32}


def ssl_features_fingerprint(source, normalize=None, dtype="float16"):
    """Identifies the SSL features a cache holds: the model, normalisation, dtype.

    A model folder counts by its configuration files and the size and time of
    its weight files; a hub id by its name.

    Arguments
    ---------
    source : str or Path
        The transformers model folder, or a hub id.
    normalize : bool, optional
        Whether waveforms are normalised before the model.
    dtype : str
        Storage dtype of the cache.

    Returns
    -------
    str
        A short hex digest.
    """
    digest = hashlib.sha1()
    digest.update(json.dumps({"normalize": normalize, "dtype": dtype}).encode())
    folder = Path(str(source)).expanduser()
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".json":
                digest.update(path.name.encode() + path.read_bytes())
            elif path.is_file():
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        digest.update(str(source).encode())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Disk cache of SSL hidden states, keyed by model and waveform content.

    Arguments
    ---------
    folder : str or Path
        Root folder of the cache (entries go to ``folder/<fingerprint>/``).
    fingerprint : str
        Identity of the SSL model and input preparation, e.g. from
        :func:`ssl_features_fingerprint`.
    dtype : str
        'float16' (half the disk, ~1e-3 relative error) or 'float32' (exact).
    """

    def __init__(self, folder, fingerprint, dtype="float16"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} must be one of {sorted(DTYPES)}")
        self.folder = Path(folder) / fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = DTYPES[dtype]
        self.hits = 0
        self.misses = 0

    def states(self, wavs, lengths, compute):
        """Hidden states of a padded waveform batch, from the cache where possible.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) waveforms.
        lengths : torch.Tensor
            Relative lengths.
        compute : callable
            ``compute(wavs, lengths) -> (layers, batch, frames, dim)``: the SSL
            front-end, called on the missing waveforms only.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            States (layers, batch, frames, dim), padded with zeros, and the
            relative frame lengths.
        """
        samples = torch.round(lengths * wavs.shape[1]).long().tolist()
        keys = [self._key(wavs[i, :n]) for i, n in enumerate(samples)]
        found = [self._load(key) for key in keys]
        missing = [i for i, states in enumerate(found) if states is None]
        if missing:
            top = max(samples[i] for i in missing)
            sub_lengths = torch.tensor([samples[i] / top for i in missing], device=wavs.device)
            computed = compute(wavs[missing, :top], sub_lengths)
            exact = ssl_frame_lengths(compute, sub_lengths, top, computed.shape[2])
            frames = torch.round(exact * computed.shape[2]).long().tolist()
            for j, i in enumerate(missing):
                states = computed[:, j, : max(frames[j], 1)]
                found[i] = states
                self._store(keys[i], states)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        longest = max(states.shape[1] for states in found)
        out = wavs.new_zeros(
            (found[0].shape[0], len(found), longest, found[0].shape[2]), dtype=torch.float32
        )
        for i, states in enumerate(found):
            out[:, i, : states.shape[1]] = states.to(device=wavs.device, dtype=torch.float32)
        frame_lengths = torch.tensor(
            [states.shape[1] / longest for states in found], device=wavs.device
        )
        return out, frame_lengths

    def _key(self, wav):
        """The hash of a waveform's samples."""
        return hashlib.sha1(wav.detach().cpu().float().numpy().tobytes()).hexdigest()

    def _path(self, key):
        """The file of an entry."""
        return self.folder / key[:2] / f"{key}.npy"

    def _load(self, key):
        """An entry's states, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return torch.from_numpy(np.array(np.load(path, mmap_mode="r")))
        except (OSError, ValueError):
            return None  # a torn write from a killed run: recompute

    def _store(self, key, states):
        """Writes an entry atomically: readers never see half a file."""
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.save(out, states.detach().cpu().float().numpy().astype(self.dtype))
        os.replace(tmp, path)
