"""CtrSVDD (SVDD Challenge 2024, controlled singing voice deepfake detection).

Layout of ``data_folder`` (as produced by the CtrSVDD download and generation
scripts, github.com/SVDDChallenge/CtrSVDD_Utils)::

    train.txt  dev.txt  test.txt        protocols, 6 space-separated columns:
                                        corpus singer file - attack label
    train_set/<file>.flac
    dev_set/<file>.flac
    test_set/<file>.flac

Labels are ``bonafide`` / ``deepfake`` (written ``spoof``); the attack is
``A01``-``A14`` or ``-``. Manifest metadata: ``speaker`` (singer ID) and
``source`` (source corpus: m4singer, kising, kiritan, ...), which the official
reporting uses to exclude ACESinger bona fide.

Command line::

    python data_prep/ctrsvdd_prepare.py /data/CtrSVDD manifests/ctrsvdd

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "dev_set").mkdir()
>>> sf.write(root / "dev_set" / "CtrSVDD_0059_D_0000000.flac", np.zeros(1600), 16000)
>>> _ = (root / "dev.txt").write_text("kiritan CtrSVDD_0059 CtrSVDD_0059_D_0000000 - - bonafide\\n")
>>> paths = prepare_ctrsvdd(root, root / "manifests")
>>> list(paths)
['dev']
"""

import logging
import sys
from pathlib import Path

if not __package__:
    # Run as a script (``python data_prep/ctrsvdd_prepare.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import (  # noqa: E402
    SplitSource,
    build_parser,
    check_choices,
    data_folder_path,
    make_utterance,
    prepare_splits,
    read_protocol,
    run_cli,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
COLUMNS = ("source", "speaker", "file", "unused", "attack", "label")
DATA_FOLDER_HELP = (
    "CtrSVDD folder holding train.txt dev.txt test.txt and train_set/ dev_set/ test_set/ (FLAC)"
)


def prepare_ctrsvdd(data_folder, save_folder, splits=SPLITS, skip_missing=False, num_workers=None):
    """Writes CtrSVDD manifests ``ctrsvdd_<split>.csv``.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``{train,dev,test}.txt`` and ``{train,dev,test}_set/``.
    save_folder : str or Path
        Where the manifests go.
    splits : sequence of str
        Any of ``train``, ``dev``, ``test``; splits without a protocol file
        (e.g. an unlabelled test set) are skipped with a log line.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``ctrsvdd_<split>_skipped.csv``) instead of raising.
    num_workers : int, optional
        Threads reading audio headers.

    Returns
    -------
    dict
        Split name -> manifest path.
    """
    folder = data_folder_path(data_folder, DATA_FOLDER_HELP)
    splits = check_choices("splits", splits, SPLITS)
    sources = {}
    for split in splits:
        audio_dir = folder / f"{split}_set"
        protocol = folder / f"{split}.txt"

        def read(protocol=protocol, audio_dir=audio_dir):
            """Yields the utterances of this split's protocol, one per line."""
            for line in read_protocol(protocol, COLUMNS):
                yield make_utterance(
                    line,
                    line["file"],
                    audio_dir / f"{line['file']}.flac",
                    line["label"],
                    line["attack"],
                    speaker=line["speaker"],
                    source=line["source"],
                )

        sources[split] = SplitSource(protocol, read, (audio_dir,))
    return prepare_splits(
        "ctrsvdd",
        save_folder,
        sources,
        options={"data_folder": str(folder)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/ctrsvdd_prepare.py --help``)."""
    run_cli(prepare_ctrsvdd, build_parser(prepare_ctrsvdd, DATA_FOLDER_HELP, SPLITS), argv)


if __name__ == "__main__":
    main()
