"""Your own bona fide and spoofed recordings, as a list file or a folder tree.

Two layouts of ``data_folder``:

(a) A **list file**: CSV (``.csv``, comma-separated) or TSV (``.tsv`` / ``.txt``,
    tab-separated), with a header naming the columns
    ``path,label[,attack][,speaker][,split]``::

        path,label,attack,speaker,split
        audio/alice_01.wav,bonafide,,alice,train
        tts/alice_01_vits.flac,spoof,vits,alice,train

    ``path`` is relative to the list's folder (or absolute); ``label`` is
    ``bonafide`` or ``spoof`` (``bona-fide``, ``genuine``, ``fake``, ...
    are understood); ``attack`` names the system of a spoof row (``unknown``
    when the column is absent); ``split`` is ``train``, ``dev`` or ``test``.

(b) A **folder** with ``bonafide/`` and ``spoof/<attack>/`` (any depth below,
    any audio format soundfile reads; files right under ``spoof/`` get the
    attack ``unknown``)::

        my_data/bonafide/**/*.wav
        my_data/spoof/vits/**/*.flac
        my_data/spoof/griffin_lim/**/*.wav

Without a ``split`` column (always for a folder), the utterances are split
with a fixed seed into ``split_fractions`` (train 80%, dev 10%, test 10%): by
speaker when the list has a ``speaker`` column, so that no speaker is in two
splits, else file by file, each class on its own so that every split holds
both. The manifests are ``custom_{train,dev,test}.csv``; IDs are the paths
relative to the list's folder (or ``data_folder``), without extension, with
``/`` and spaces turned into ``-`` and ``_``.

Errors name the rows: an unknown label, missing files (count and first paths),
a speaker given in two splits, an unknown split, a split without one of the
classes, two files that would get one ID.

Command line::

    python data_prep/custom_prepare.py my_list.csv manifests/custom
    python data_prep/custom_prepare.py my_data/ manifests/custom

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> for name in ("bonafide/a1.wav", "bonafide/a2.wav", "spoof/tts/a1.wav", "spoof/tts/a2.wav"):
...     (root / name).parent.mkdir(parents=True, exist_ok=True)
...     sf.write(root / name, np.zeros(8000), 16000)
>>> paths = prepare_custom(root, root / "manifests", split_fractions=(0.5, 0.5, 0.0))
>>> sorted(paths)
['dev', 'train']
>>> Path(paths["train"]).read_text().splitlines()[1].split(",")[3:5]
['bonafide', '-']
"""

import logging
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

if not __package__:
    # Run as a script (``python data_prep/custom_prepare.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import (  # noqa: E402
    DataPrepError,
    OptionError,
    SplitSource,
    build_parser,
    make_utterance,
    prepare_splits,
    read_csv_protocol,
    run_cli,
)
from speechbrain_nes2net.audio import is_audio_path  # noqa: E402
from speechbrain_nes2net.manifest import BONAFIDE  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
#: Columns of a list file; ``path`` and ``label`` are required.
COLUMNS = ("path", "label", "attack", "speaker", "split")
#: The attack of spoofed files whose system is not named.
UNKNOWN_ATTACK = "unknown"
#: The listing a folder layout is turned into (in the save folder).
FOLDER_LISTING = "custom_files.tsv"
DATA_FOLDER_HELP = (
    "a list file (CSV/TSV with columns path,label[,attack][,speaker][,split]) or a "
    "folder with bonafide/ and spoof/<attack>/"
)


def prepare_custom(
    data_folder,
    save_folder,
    split_fractions=(0.8, 0.1, 0.1),
    split_seed=1234,
    skip_missing=False,
    num_workers=None,
):
    """Writes the manifests ``custom_{train,dev,test}.csv`` of your own data.

    Arguments
    ---------
    data_folder : str or Path
        A list file, or a folder with ``bonafide/`` and ``spoof/<attack>/``
        (see the module documentation).
    save_folder : str or Path
        Where the manifests go.
    split_fractions : sequence of 3 floats
        Shares of train, dev and test when the data gives no splits (a zero
        share gives no such split).
    split_seed : int
        Seed of that split.
    skip_missing : bool
        Leave out listed files that do not exist (listed in
        ``custom_<split>_skipped.csv``) instead of raising.
    num_workers : int, optional
        Threads reading audio headers.

    Returns
    -------
    dict
        Split name -> manifest path.
    """
    source = Path(os.path.abspath(os.path.expanduser(str(data_folder))))
    save_folder = Path(os.path.abspath(os.path.expanduser(str(save_folder))))
    fractions = _check_fractions(split_fractions)
    if source.is_dir():
        list_file, root, audio_dirs = _folder_listing(source, save_folder), source, (source,)
    elif source.is_file():
        list_file, root, audio_dirs = source, source.parent, ()
    else:
        raise OptionError(f"data_folder {source} does not exist; expected {DATA_FOLDER_HELP}")
    utterances, given = _read_list(list_file, root)
    assignment = _assign_splits(utterances, given, list_file, fractions, split_seed)

    def reader(split):
        """The ``read()`` of one split: its utterances, in list order."""

        def read():
            """Yields the utterances assigned to this split."""
            for utterance, assigned in zip(utterances, assignment):
                if assigned == split:
                    yield utterance

        return read

    present = [split for split in SPLITS if split in assignment]
    return prepare_splits(
        "custom",
        save_folder,
        {split: SplitSource(list_file, reader(split), audio_dirs) for split in present},
        options={"data_folder": str(source), "fractions": fractions, "seed": split_seed},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def _check_fractions(fractions):
    """Three non-negative shares summing to 1, with training data."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise OptionError(
            f"split_fractions={list(fractions)} must be three shares (train, dev, test) "
            "that are >= 0 and sum to 1"
        )
    if fractions[0] == 0:
        raise OptionError("split_fractions gives no training data (train share 0)")
    return fractions


def _folder_listing(folder, save_folder):
    """A TSV list of the audio under ``bonafide/`` and ``spoof/<attack>/``, written when it changed."""
    bona, spoof = folder / "bonafide", folder / "spoof"
    if not bona.is_dir() or not spoof.is_dir():
        raise OptionError(f"{folder} has no bonafide/ and spoof/ folders; expected {DATA_FOLDER_HELP}")
    lines = ["path\tlabel\tattack"]
    for path in sorted(p for p in bona.rglob("*") if p.is_file() and is_audio_path(p)):
        lines.append(f"{path.relative_to(folder).as_posix()}\tbonafide\t-")
    for path in sorted(p for p in spoof.rglob("*") if p.is_file() and is_audio_path(p)):
        parts = path.relative_to(spoof).parts
        attack = parts[0] if len(parts) > 1 else UNKNOWN_ATTACK
        lines.append(f"{path.relative_to(folder).as_posix()}\tspoof\t{attack}")
    if len(lines) == 1:
        raise DataPrepError(f"{folder}: no audio file under bonafide/ or spoof/")
    text = "\n".join(lines) + "\n"
    listing = save_folder / FOLDER_LISTING
    save_folder.mkdir(parents=True, exist_ok=True)
    # Rewritten only when the tree changed, so that an unchanged tree is not redone.
    if not listing.is_file() or listing.read_text(encoding="utf-8") != text:
        listing.write_text(text, encoding="utf-8")
    return listing


def _read_list(list_file, root):
    """The list's rows as utterances, and the split each row gives ('' for none).

    Relative paths start from ``root``.
    """
    delimiter = "," if list_file.suffix.lower() == ".csv" else "\t"
    utterances, splits, ids = [], [], {}
    for line in read_csv_protocol(list_file, ("path", "label"), delimiter=delimiter):
        path = line["path"]
        if not path:
            raise line.error("empty path")
        wav = Path(os.path.expanduser(path))
        wav = wav if wav.is_absolute() else root / wav
        utt_id = _utterance_id(path)
        if utt_id in ids:
            first_line, first_path = ids[utt_id]
            if first_path == path:
                raise line.error(f"{path!r} is listed again (first on line {first_line})")
            raise line.error(
                f"{path!r} gets the ID {utt_id!r} of line {first_line}; file names must "
                "differ in more than their extension"
            )
        ids[utt_id] = (line.number, path)
        attack = line.fields["attack"] if "attack" in line.fields else UNKNOWN_ATTACK
        metadata = {}
        if line.fields.get("speaker"):
            metadata["speaker"] = line["speaker"]
        split = line.fields.get("split", "")
        if split and split not in SPLITS:
            raise line.error(f"split {split!r}; expected one of {', '.join(SPLITS)}")
        utterances.append(make_utterance(line, utt_id, wav, line["label"], attack, **metadata))
        splits.append(split)
    return utterances, splits


def _utterance_id(path):
    """An ID from a relative path: no extension, ``/`` -> ``-``, whitespace -> ``_``."""
    stem = Path(path).with_suffix("").as_posix().lstrip("./")
    return "".join("_" if c.isspace() else "-" if c in "/\\" else c for c in stem)


def _assign_splits(utterances, given, list_file, fractions, seed):
    """The split of every row: given by the list, else drawn (see the module documentation)."""
    if any(given):
        missing = [u.line.number for u, split in zip(utterances, given) if not split]
        if missing:
            raise DataPrepError(
                f"{list_file}: lines {_lines(missing)} have no split while others have one; "
                "give every row a split, or none"
            )
        _check_speakers(utterances, given, list_file)
        assignment = given
    elif all(u.metadata.get("speaker") for u in utterances):
        assignment = _split_by_group(utterances, [u.metadata["speaker"] for u in utterances], fractions, seed)
    else:
        assignment = _split_by_file(utterances, fractions, seed)
    _check_classes(utterances, assignment, list_file)
    return assignment


def _check_speakers(utterances, splits, list_file):
    """No speaker in two given splits."""
    seen = defaultdict(dict)
    for utterance, split in zip(utterances, splits):
        speaker = utterance.metadata.get("speaker")
        if speaker:
            seen[speaker].setdefault(split, utterance.line.number)
    for speaker, where in seen.items():
        if len(where) > 1:
            places = ", ".join(f"{split} (line {line})" for split, line in where.items())
            raise DataPrepError(
                f"{list_file}: speaker {speaker!r} is in several splits: {places}; a speaker's "
                "recordings must stay in one split, or the test measures memorised voices"
            )


def _split_by_group(utterances, groups, fractions, seed):
    """Whole speakers into train / dev / test, in shuffled order, up to each share of the rows."""
    order = sorted(set(groups))
    np.random.default_rng(seed).shuffle(order)
    counts = defaultdict(int)
    for group in groups:
        counts[group] += 1
    bounds = np.cumsum(fractions) * len(groups)
    assigned, done = {}, 0
    for group in order:
        # The split whose share the middle of this speaker's rows falls in.
        middle = done + counts[group] / 2
        assigned[group] = SPLITS[min(int(np.searchsorted(bounds, middle, side="right")), 2)]
        done += counts[group]
    return [assigned[group] for group in groups]


def _split_by_file(utterances, fractions, seed):
    """Each class shuffled and cut into the shares: every split gets both classes."""
    rng = np.random.default_rng(seed)
    assignment = [None] * len(utterances)
    for label in (BONAFIDE, "spoof"):
        indices = [i for i, u in enumerate(utterances) if u.label == label]
        rng.shuffle(indices)
        cuts = np.round(np.cumsum(fractions) * len(indices)).astype(int)
        for position, index in enumerate(indices):
            assignment[index] = SPLITS[int(np.searchsorted(cuts, position, side="right"))]
    return assignment


def _check_classes(utterances, assignment, list_file):
    """Every split that has rows holds both classes, and there is training data."""
    if "train" not in assignment:
        raise DataPrepError(f"{list_file}: no row is in the train split")
    for split in SPLITS:
        members = [u for u, s in zip(utterances, assignment) if s == split]
        if not members:
            continue
        labels = {u.label for u in members}
        if len(labels) < 2:
            lines = [u.line.number for u in members]
            raise DataPrepError(
                f"{list_file}: the {split} split has only {labels.pop()} rows (lines "
                f"{_lines(lines)}); every split needs bona fide and spoofed audio"
            )


def _lines(numbers, shown=5):
    """Line numbers for a message: the first few, then how many more."""
    numbers = list(numbers)
    text = ", ".join(str(n) for n in numbers[:shown])
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def main(argv=None):
    """Command line entry point (``python data_prep/custom_prepare.py --help``)."""
    parser = build_parser(prepare_custom, DATA_FOLDER_HELP)
    parser.add_argument(
        "--split-fractions", dest="split_fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "DEV", "TEST"), help="shares when the data gives no splits",
    )
    parser.add_argument("--split-seed", dest="split_seed", type=int, default=1234)
    run_cli(prepare_custom, parser, argv)


if __name__ == "__main__":
    main()
