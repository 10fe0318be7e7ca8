"""The toolkit's segment conventions for spoof localisation (partially spoofed speech).

A segment is ``segment_shift`` seconds of a recording. A manifest's optional
``segment_labels`` column holds the path template of its split's PartialSpoof
label files, with ``{shift}`` for the resolution (e.g.
``/data/database/segment_labels/train_seglab_{shift}.npy``, written by
``data_prep/partialspoof_prepare.py``): a pickled dict utterance ID -> one label
per segment, **1 = bona fide, 0 = spoof**, as the release stores them. Training
(:mod:`speechbrain_nes2net.training.dataio`) and the ``partialspoof`` report
(:mod:`speechbrain_nes2net.evaluation.reports`) read them with
:func:`load_segment_labels`.
"""

import functools
from pathlib import Path

import numpy as np

#: The released PartialSpoof segment resolutions, in seconds.
SEGMENT_SHIFTS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
#: How the frame scores (or logits) of a segment combine: ``min`` (PartialSpoof's
#: rule: a segment is spoof when any part of it is), ``mean`` or ``max``.
SEGMENT_POOLINGS = ("min", "mean", "max")


def segment_label_path(template, shift):
    """The segment label file of ``template`` at ``shift`` seconds.

    Arguments
    ---------
    template : str
        A manifest's ``segment_labels`` value (with ``{shift}``).
    shift : float or str
        One of :data:`SEGMENT_SHIFTS`.

    Example
    -------
    >>> segment_label_path("/db/segment_labels/dev_seglab_{shift}.npy", 0.02)
    '/db/segment_labels/dev_seglab_0.02.npy'
    """
    value = float(shift)
    if not any(abs(value - s) < 1e-9 for s in SEGMENT_SHIFTS):
        shifts = ", ".join(f"{s:.2f}" for s in SEGMENT_SHIFTS)
        raise ValueError(f"segment shift {shift!r} is not published; choose from {shifts}")
    return template.format(shift=f"{value:.2f}")


def load_segment_labels(template, utt_id, shift):
    """The segment labels of one PartialSpoof utterance at a resolution: **1 = bona fide, 0 = spoof**.

    The polarity of the database README ("'0' for spoof, and '1' for bona
    fide") and of the official code, checked on the files whenever a recipe
    trains on them (:func:`check_segment_labels`). The two most recent label
    files stay cached: the 10 ms ones hold several hundred MB of strings.

    Arguments
    ---------
    template : str
        A manifest's ``segment_labels`` value.
    utt_id : str
        Utterance ID.
    shift : float or str
        Resolution in seconds, one of :data:`SEGMENT_SHIFTS`.

    Returns
    -------
    numpy.ndarray
        int64, one value per segment.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError
        A missing file; no entry for ``utt_id``; an unpublished shift or labels other than 0/1.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "train_seglab_0.64.npy", {"u1": np.array(["1", "1", "0"])},
    ...         allow_pickle=True)
    >>> load_segment_labels(str(folder / "train_seglab_{shift}.npy"), "u1", "0.64")
    array([1, 1, 0])
    """
    path = segment_label_path(template, shift)
    table = _label_table(path)
    if utt_id not in table:
        raise KeyError(f"{path}: no segment labels for utterance {utt_id!r}")
    labels = np.asarray(table[utt_id]).astype(np.int64)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{path}: labels of {utt_id!r} are not all 0/1: {np.unique(labels)}")
    return labels


def check_segment_labels(manifest_path, shift, max_listed=5):
    """Checks the segment labels of a manifest's utterances before training on them.

    Every row needs labels at ``shift``; every bona fide utterance must be bona
    fide throughout and every spoofed one have a spoofed segment, so a file of
    the opposite polarity fails on its first bona fide utterance.

    Arguments
    ---------
    manifest_path : str or Path
        A manifest with a ``segment_labels`` column.
    shift : float
        Resolution in seconds.
    max_listed : int
        IDs listed per problem.

    Returns
    -------
    dict
        Counts: ``n_utterances``, ``n_segments``, ``n_spoof_segments``.

    Raises
    ------
    ValueError
        Naming the label file, the problem and the first IDs.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_nes2net.manifest import write_manifest
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "dev_seglab_0.32.npy",
    ...         {"b1": np.array(["1", "1"]), "s1": np.array(["1", "0"])}, allow_pickle=True)
    >>> template = str(folder / "dev_seglab_{shift}.npy")
    >>> rows = [
    ...     {"ID": "b1", "duration": 0.6, "wav": "/data/b1.wav", "label": "bonafide",
    ...      "attack": "-", "segment_labels": template},
    ...     {"ID": "s1", "duration": 0.6, "wav": "/data/s1.wav", "label": "spoof",
    ...      "attack": "CON", "segment_labels": template},
    ... ]
    >>> check_segment_labels(write_manifest(rows, folder / "dev.csv"), 0.32)
    {'n_utterances': 2, 'n_segments': 4, 'n_spoof_segments': 1}
    """
    from speechbrain_nes2net.manifest import read_manifest  # not at import: the lobes import this

    frame = read_manifest(manifest_path)
    if "segment_labels" not in frame.columns:
        raise ValueError(
            f"{manifest_path}: no segment_labels column; localisation needs a manifest of "
            "data_prep.partialspoof_prepare (or the same column: a label path template)"
        )
    missing, spoofed_bonafide, clean_spoof = [], [], []
    counts = {"n_utterances": len(frame), "n_segments": 0, "n_spoof_segments": 0}
    for utt_id, template, label in zip(frame["ID"], frame["segment_labels"], frame["label"]):
        try:
            labels = load_segment_labels(template, utt_id, shift)
        except KeyError:
            missing.append(utt_id)
            continue
        counts["n_segments"] += labels.size
        counts["n_spoof_segments"] += int((labels == 0).sum())
        if label == "bonafide" and (labels == 0).any():
            spoofed_bonafide.append(utt_id)
        elif label != "bonafide" and not (labels == 0).any():
            clean_spoof.append(utt_id)
    where = segment_label_path(frame["segment_labels"].iloc[0], shift) if len(frame) else ""
    problems = [
        f"{len(ids)} {what} (e.g. {ids[:max_listed]})"
        for ids, what in (
            (missing, "utterances have no labels"),
            (spoofed_bonafide, "bona fide utterances have spoofed (0) segments"),
            (clean_spoof, "spoofed utterances have no spoofed (0) segment"),
        )
        if ids
    ]
    if problems:
        hint = ""
        n_bona = int((frame["label"] == "bonafide").sum())
        if spoofed_bonafide and len(spoofed_bonafide) > n_bona // 2:
            hint = (
                "; most bona fide utterances look spoofed: the file's polarity is the opposite "
                "of the release's ('1' bona fide, '0' spoof)"
            )
        raise ValueError(f"{where} (rows of {manifest_path}): " + "; ".join(problems) + hint)
    return counts


def _label_table(path):
    """The (cached) table of a label file."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: segment label file not found (database/segment_labels/ of PartialSpoof)"
        )
    stat = Path(path).stat()
    return _cached_table(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _cached_table(path, mtime_ns, size):
    """The table of a label file as of its modification time and size (a rewritten file is reread)."""
    return np.load(path, allow_pickle=True).item()
