"""In-the-Wild (Mueller et al., Interspeech 2022): real and deepfake speech of public figures.

Layout of ``data_folder`` (``release_in_the_wild/`` from release_in_the_wild.zip,
deepfake-total.com/in_the_wild)::

    meta.csv            comma-separated with header: file,speaker,label
    0.wav ... 31778.wav

Labels are ``bona-fide`` / ``spoof``. The corpus names no generation system,
so ``attack`` is ``-`` for bona fide and ``unknown`` (:data:`UNKNOWN_ATTACK`)
for spoof rows. The ID is the file name without extension (``0.wav`` -> ``0``);
metadata: ``speaker``. There is a single split, ``eval``.

Command line::

    python data_prep/in_the_wild_prepare.py /data/release_in_the_wild manifests/in_the_wild

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> sf.write(root / "4.wav", np.zeros(16000), 16000)
>>> meta = "file,speaker,label\\n4.wav,Christopher Hitchens,bona-fide\\n"
>>> _ = (root / "meta.csv").write_text(meta)
>>> paths = prepare_in_the_wild(root, root / "manifests")
>>> print(Path(paths["eval"]).read_text().splitlines()[1].replace(str(root), "<root>"))
4,1.0,<root>/4.wav,bonafide,-,Christopher Hitchens
"""

import logging
import sys
from pathlib import Path, PurePath

if not __package__:
    # Run as a script (``python data_prep/in_the_wild_prepare.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import (  # noqa: E402
    SplitSource,
    build_parser,
    data_folder_path,
    make_utterance,
    prepare_splits,
    read_csv_protocol,
    run_cli,
)

logger = logging.getLogger(__name__)

COLUMNS = ("file", "speaker", "label")
#: The attack of every spoof row: the corpus does not say which system made it.
UNKNOWN_ATTACK = "unknown"
DATA_FOLDER_HELP = "the release_in_the_wild/ folder holding meta.csv and the wav files"


def prepare_in_the_wild(data_folder, save_folder, skip_missing=False, num_workers=None):
    """Writes the In-the-Wild manifest ``in_the_wild_eval.csv``.

    Arguments
    ---------
    data_folder : str or Path
        The ``release_in_the_wild/`` folder.
    save_folder : str or Path
        Where the manifest goes.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``in_the_wild_eval_skipped.csv``) instead of raising.
    num_workers : int, optional
        Threads reading audio headers.

    Returns
    -------
    dict
        ``{"eval": manifest path}``.
    """
    folder = data_folder_path(data_folder, DATA_FOLDER_HELP)
    protocol = folder / "meta.csv"

    def read():
        """Yields the utterances of the protocol, one per line."""
        for line in read_csv_protocol(protocol, COLUMNS):
            name = line["file"]
            if not name or PurePath(name).name != name:
                raise line.error(f"file {name!r} is not a file name inside {folder}")
            yield make_utterance(
                line,
                PurePath(name).stem,
                folder / name,
                line["label"],
                UNKNOWN_ATTACK,
                speaker=line["speaker"],
            )

    return prepare_splits(
        "in_the_wild",
        save_folder,
        {"eval": SplitSource(protocol, read, (folder,))},
        options={"data_folder": str(folder)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/in_the_wild_prepare.py --help``)."""
    run_cli(prepare_in_the_wild, build_parser(prepare_in_the_wild, DATA_FOLDER_HELP), argv)


if __name__ == "__main__":
    main()
