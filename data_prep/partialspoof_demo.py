"""A synthetic partially spoofed corpus in the PartialSpoof layout, from the demo's signals.

Bona fide utterances are the demo's speech-like signals
(:func:`data_prep.demo_prepare.speech_like`); a partially spoofed utterance is
one of them with one or two stretches replaced by their vocoder-like
re-synthesis (:func:`data_prep.demo_prepare.vocoder_resynthesis`, the demo's
attacks A01-A03: same content and loudness, phase re-estimated), joined with
5 ms cross-fades. The boundaries fall anywhere, not on a segment grid, and are
known exactly. The corpus is written as the PartialSpoof release is laid out
(see :mod:`data_prep.partialspoof_prepare`), so the PartialSpoof recipes and
reports run on it unchanged::

    <root>/protocols/PartialSpoof_LA_cm_protocols/PartialSpoof.LA.cm.{train,dev,eval}.trl.txt
    <root>/{train,dev,eval}/con_wav/<ID>.wav
    <root>/segment_labels/{train,dev,eval}_seglab_{0.01,...,0.64}.npy
    <root>/truth.json        # exact spoofed stretches (seconds) and durations, per ID

Segment labels follow the release's rule and polarity: segment ``k`` of shift
``s`` covers ``[k s, (k + 1) s)``, there are ``ceil(duration / s)`` of them,
and a segment is ``'0'`` (spoof) when any part of it is spoofed (the cross-fade
counts from its middle), ``'1'`` (bona fide) otherwise.

Command line::

    python data_prep/partialspoof_demo.py results/partialspoof_demo/database

Example
-------
>>> import tempfile
>>> root = build_partialspoof_demo(tempfile.mkdtemp(), n_train=2, n_dev=1, n_eval=1)
>>> sorted(p.name for p in (root / "segment_labels").glob("train_*"))[:2]
['train_seglab_0.01.npy', 'train_seglab_0.02.npy']
>>> truth = read_truth(root)
>>> spliced = [t for t in truth.values() if t["spoof"]]
>>> all(0 < s < e <= t["duration"] for t in spliced for s, e in t["spoof"])
True
"""

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import soundfile

if not __package__:
    # Run as a script (``python data_prep/partialspoof_demo.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.demo_prepare import ATTACKS, SAMPLE_RATE, SEEN_ATTACKS, speech_like  # noqa: E402
from data_prep.partialspoof_prepare import PROTOCOLS  # noqa: E402
from speechbrain_nes2net.segments import SEGMENT_SHIFTS  # noqa: E402

logger = logging.getLogger(__name__)

SPLIT_SEEDS = {"train": 11, "dev": 12, "eval": 13}
SPLIT_LETTERS = {"train": "T", "dev": "D", "eval": "E"}
#: Cross-fade at each splice boundary, in seconds.
CROSSFADE_SECONDS = 0.005
TRUTH_FILE = "truth.json"


def splice(bonafide, spoofed, stretches, sample_rate=SAMPLE_RATE, crossfade=CROSSFADE_SECONDS):
    """``bonafide`` with ``stretches`` taken from ``spoofed``, cross-faded.

    Arguments
    ---------
    bonafide, spoofed : numpy.ndarray
        Waveforms of the same length.
    stretches : list of (float, float)
        (start, end) seconds of the spoofed stretches; each boundary is the
        middle of its cross-fade.
    sample_rate : int
        Sampling rate.
    crossfade : float
        Cross-fade length in seconds.

    Returns
    -------
    numpy.ndarray

    Example
    -------
    >>> out = splice(np.zeros(100), np.ones(100), [(0.002, 0.004)], sample_rate=10000,
    ...              crossfade=0.0002)
    >>> out[18:22].tolist(), out[38:42].tolist()  # samples 20-39 spoofed, 2-sample fades
    ([0.0, 0.25, 0.75, 1.0], [1.0, 0.75, 0.25, 0.0])
    """
    n = len(bonafide)
    gain = np.zeros(n)  # 1 where the spoofed signal is heard
    half = crossfade * sample_rate / 2
    t = np.arange(n) + 0.5
    for start, end in stretches:
        a, b = start * sample_rate, end * sample_rate
        rise = np.clip((t - (a - half)) / (2 * half), 0, 1)
        fall = np.clip(((b + half) - t) / (2 * half), 0, 1)
        gain = np.maximum(gain, np.minimum(rise, fall))
    return (1 - gain) * bonafide + gain * spoofed


def segment_labels(duration, stretches, shift):
    """PartialSpoof segment labels ('1' bona fide, '0' spoof) of known spoofed stretches.

    Arguments
    ---------
    duration : float
        Seconds.
    stretches : list of (float, float)
        Spoofed (start, end) seconds.
    shift : float
        Segment length in seconds.

    Returns
    -------
    numpy.ndarray
        ``ceil(duration / shift)`` strings, dtype ``<U21`` as in the release.

    Example
    -------
    >>> segment_labels(0.5, [(0.15, 0.22)], 0.1).tolist()
    ['1', '0', '0', '1', '1']
    """
    count = max(1, math.ceil(round(duration / shift, 6)))
    labels = np.full(count, "1", dtype="<U21")
    for k in range(count):
        start, end = k * shift, min((k + 1) * shift, duration)
        if any(min(end, e) > max(start, s) for s, e in stretches):
            labels[k] = "0"
    return labels


def _stretches(rng, duration, count):
    """``count`` disjoint spoofed stretches of 0.3-0.8 s, at least 0.25 s from the edges."""
    for _ in range(100):
        lengths = rng.uniform(0.3, 0.8, count)
        room = duration - 0.5 - lengths.sum() - 0.3 * (count - 1)
        if room <= 0:
            count, lengths = 1, lengths[:1]
            room = duration - 0.5 - lengths.sum()
            if room <= 0:
                continue
        gaps = np.sort(rng.uniform(0, room, count))
        gaps = np.diff(np.concatenate(([0.0], gaps)))
        stretches, position = [], 0.25
        for gap, length in zip(gaps, lengths):
            position += gap
            stretches.append((round(position, 4), round(position + length, 4)))
            position += length + 0.3
        return stretches
    raise ValueError(f"no room for a spoofed stretch in {duration:.2f} s")


def build_partialspoof_demo(
    folder,
    n_train=48,
    n_dev=16,
    n_eval=16,
    bonafide_fraction=0.25,
    min_seconds=2.0,
    max_seconds=3.5,
    seed=2023,
):
    """Writes the synthetic partial-spoof corpus (idempotent for the same options).

    Arguments
    ---------
    folder : str or Path
        The ``database/`` folder to write.
    n_train, n_dev, n_eval : int
        Utterances per split.
    bonafide_fraction : float
        Share of bona fide utterances (PartialSpoof: about 10%); at least one
        of each class per split.
    min_seconds, max_seconds : float
        Range of durations.
    seed : int
        Seed of the whole corpus.

    Returns
    -------
    Path
        ``folder``.
    """
    root = Path(folder)
    options = dict(
        n_train=n_train, n_dev=n_dev, n_eval=n_eval, bonafide_fraction=bonafide_fraction,
        min_seconds=min_seconds, max_seconds=max_seconds, seed=seed,
    )  # fmt: skip
    stamp = root / "partialspoof_demo.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == options:
        logger.info("Synthetic PartialSpoof corpus already in %s", root)
        return root
    protocols = root / "protocols" / "PartialSpoof_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    (root / "segment_labels").mkdir(exist_ok=True)
    truth = {}
    for split, count in (("train", n_train), ("dev", n_dev), ("eval", n_eval)):
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
        audio = root / split / "con_wav"
        audio.mkdir(parents=True, exist_ok=True)
        n_bona = min(count - 1, max(1, round(bonafide_fraction * count)))
        lines, tables = [], {shift: {} for shift in SEGMENT_SHIFTS}
        letter = SPLIT_LETTERS[split]
        for index in range(count):
            seconds = round(rng.uniform(min_seconds, max_seconds), 3)
            wav = speech_like(rng, seconds)
            speaker = f"LA_9{SPLIT_SEEDS[split]}{index % 4}"
            if index < n_bona:
                utt, stretches, key, system = f"LA_{letter}_9{index:06d}", [], "bonafide", "-"
            else:
                attack = SEEN_ATTACKS[index % len(SEEN_ATTACKS)]
                method, settings = ATTACKS[attack]
                stretches = _stretches(rng, seconds, 1 + int(rng.random() < 0.4))
                wav = splice(wav, method(wav, rng, **settings), stretches)
                utt, key, system = f"CON_{letter}_{index:07d}", "spoof", "CON"
            wav = rng.uniform(0.3, 1.0) * wav
            soundfile.write(audio / f"{utt}.wav", wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            duration = len(wav) / SAMPLE_RATE
            lines.append(f"{speaker} {utt} - {system} {key}")
            for shift in SEGMENT_SHIFTS:
                tables[shift][utt] = segment_labels(duration, stretches, shift)
            truth[utt] = {"split": split, "duration": duration, "spoof": stretches}
        (protocols / PROTOCOLS[split]).write_text("\n".join(lines) + "\n")
        for shift, table in tables.items():
            np.save(root / "segment_labels" / f"{split}_seglab_{shift:.2f}.npy", table)
        logger.info("Synthetic PartialSpoof %s: %d utterances (%d bona fide)", split, count, n_bona)
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    stamp.write_text(json.dumps(options))
    return root


def prepare_partialspoof_demo(data_folder, save_folder, n_train=48, n_dev=16, n_eval=16, seed=2023):
    """Writes the synthetic corpus (if needed) and its PartialSpoof manifests.

    The ``data_preparation`` entry of ``hparams/demo_localization.yaml``:
    :func:`build_partialspoof_demo` then
    :func:`data_prep.partialspoof_prepare.prepare_partialspoof` on the result,
    so the manifests are exactly those of the real corpus.

    Arguments
    ---------
    data_folder : str or Path
        The ``database/`` folder to write.
    save_folder : str or Path
        Where the manifests go.
    n_train, n_dev, n_eval : int
        Utterances per split.
    seed : int
        Seed of the whole corpus.

    Returns
    -------
    dict
        Split name -> manifest path.
    """
    from data_prep.partialspoof_prepare import prepare_partialspoof

    build_partialspoof_demo(data_folder, n_train, n_dev, n_eval, seed=seed)
    return prepare_partialspoof(data_folder, save_folder)


def read_truth(folder):
    """ID -> {'split', 'duration', 'spoof': list of (start, end)} of a synthetic corpus."""
    data = json.loads((Path(folder) / TRUTH_FILE).read_text())
    for entry in data.values():
        entry["spoof"] = [tuple(pair) for pair in entry["spoof"]]
    return data


def main(argv=None):
    """Command line: ``python data_prep/partialspoof_demo.py FOLDER [--n_train N]`` and options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the database/ folder to write")
    for name, default in (("n_train", 48), ("n_dev", 16), ("n_eval", 16)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    root = build_partialspoof_demo(args.folder, args.n_train, args.n_dev, args.n_eval, seed=args.seed)
    print(root)


if __name__ == "__main__":
    main()
