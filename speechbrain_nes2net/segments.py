"""The toolkit's segment conventions for spoof localisation (partially spoofed speech).

A segment is ``segment_shift`` seconds of a recording, scored from the SSL
frames it covers; model (:mod:`speechbrain_nes2net.lobes.localization`),
evaluation (:mod:`speechbrain_nes2net.evaluation.localization`) and data
preparation (``data_prep/partialspoof_prepare.py``) share these names.

Segment labels, the truth of a partially spoofed utterance: a manifest's optional ``segment_labels`` column holds, per row, the absolute
path template of its split's label files, with a ``{shift}`` placeholder for
the resolution in seconds, e.g.
``/data/database/segment_labels/train_seglab_{shift}.npy`` (written by
``data_prep/partialspoof_prepare.py``). Each file is a pickled dict
utterance ID -> one label per segment, as the PartialSpoof release stores
them: **1 = bona fide, 0 = spoof**. Localisation training
(:mod:`speechbrain_nes2net.training.dataio`, ``training/recipe.py``) and the
``partialspoof`` report (:mod:`speechbrain_nes2net.evaluation.reports`)
read them through :func:`load_segment_labels`.

Example
-------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> np.save(folder / "dev_seglab_0.16.npy",
...         {"CON_D_0000000": np.array(["1", "0"])}, allow_pickle=True)
>>> template = str(folder / "dev_seglab_{shift}.npy")
>>> load_segment_labels(template, "CON_D_0000000", 0.16)
array([1, 0])

Authors
 * speechbrain-nes2net contributors
"""

import functools
from pathlib import Path

import numpy as np

#: The released PartialSpoof segment resolutions, in seconds.
SEGMENT_SHIFTS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
#: How the scores (or logits) of the frames of one segment combine into the
#: segment's: ``min`` (PartialSpoof's rule: a segment is spoof when any part
#: of it is), ``mean`` or ``max``.
SEGMENT_POOLINGS = ("min", "mean", "max")


def segment_label_path(template, shift):
    """The segment label file of ``template`` at ``shift`` seconds.

    Arguments
    ---------
    template : str
        A manifest's ``segment_labels`` value (with ``{shift}``).
    shift : float or str
        One of :data:`SEGMENT_SHIFTS`.

    Returns
    -------
    str

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
    """Frame-level truth of one PartialSpoof utterance at a given resolution.

    Polarity: **1 = bona fide, 0 = spoof**, exactly as stored. The database
    README says "'0' for spoof, and '1' for bona fide", and the official
    PartialSpoof code agrees (its label reader maps 1 to bona fide and pools
    segments with ``min`` so that any spoofed frame makes a segment spoof).
    This matches the toolkit's score convention (higher = more bona fide).
    The files themselves are checked whenever a localisation recipe trains on
    them (:func:`check_segment_labels`: bona fide utterances must be all 1).

    Each label file is loaded once and kept (the two most recent stay cached):
    the 10 ms files hold several hundred MB of strings.

    Arguments
    ---------
    template : str
        A manifest's ``segment_labels`` value, e.g.
        ``/data/database/segment_labels/train_seglab_{shift}.npy``.
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
    FileNotFoundError
        If the label file does not exist.
    KeyError
        If the file has no entry for ``utt_id``.
    ValueError
        For an unpublished shift or values other than 0/1.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
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

    Every row needs labels at ``shift``, and their polarity must be the one
    this toolkit reads (1 = bona fide, 0 = spoof): every bona fide utterance
    is bona fide throughout, every spoofed utterance has a spoofed segment.
    The release's bona fide utterances are in its label files (all '1'), so
    this checks the polarity on the real files at every run: a file with the
    opposite polarity fails on its first bona fide utterance.

    Arguments
    ---------
    manifest_path : str or Path
        A manifest with a ``segment_labels`` column (from
        ``data_prep/partialspoof_prepare.py``).
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
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
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
    from speechbrain_nes2net.manifest import read_manifest

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
    problems = []
    if missing:
        problems.append(f"{len(missing)} utterances have no labels (e.g. {missing[:max_listed]})")
    if spoofed_bonafide:
        problems.append(
            f"{len(spoofed_bonafide)} bona fide utterances have spoofed (0) segments (e.g. "
            f"{spoofed_bonafide[:max_listed]})"
        )
    if clean_spoof:
        problems.append(
            f"{len(clean_spoof)} spoofed utterances have no spoofed (0) segment (e.g. "
            f"{clean_spoof[:max_listed]})"
        )
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
