"""ASVspoof 2019 logical access (LA).

Layout of ``data_folder`` (the ``LA/`` folder of the LA.zip release,
datashare.ed.ac.uk/handle/10283/3336)::

    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt
    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt
    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt
    ASVspoof2019_LA_train/flac/<utt>.flac
    ASVspoof2019_LA_dev/flac/<utt>.flac
    ASVspoof2019_LA_eval/flac/<utt>.flac

Protocols: 5 space-separated columns ``speaker utt - system key``; the system
(``A01``-``A19``, ``-`` for bona fide) becomes ``attack``, the speaker is kept.

Command line::

    python data_prep/asvspoof2019_prepare.py /data/LA manifests/asvspoof2019

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "ASVspoof2019_LA_cm_protocols").mkdir()
>>> (root / "ASVspoof2019_LA_dev" / "flac").mkdir(parents=True)
>>> sf.write(root / "ASVspoof2019_LA_dev" / "flac" / "LA_D_1.flac", np.zeros(3200), 16000)
>>> protocol = root / "ASVspoof2019_LA_cm_protocols" / PROTOCOLS["dev"]
>>> _ = protocol.write_text("LA_0069 LA_D_1 - A01 spoof\\n")
>>> paths = prepare_asvspoof2019(root, root / "manifests")
>>> Path(paths["dev"]).name
'asvspoof2019_la_dev.csv'
"""

import logging
import sys
from pathlib import Path

if not __package__:
    # Run as a script (``python data_prep/asvspoof2019_prepare.py``): Python puts data_prep/
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

SPLITS = ("train", "dev", "eval")
PROTOCOLS = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
COLUMNS = ("speaker", "utt", "unused", "system", "key")
DATA_FOLDER_HELP = (
    "the ASVspoof 2019 LA/ folder holding ASVspoof2019_LA_cm_protocols/ and "
    "ASVspoof2019_LA_{train,dev,eval}/flac/"
)


def prepare_asvspoof2019(
    data_folder, save_folder, splits=SPLITS, skip_missing=False, num_workers=None
):
    """Writes ASVspoof 2019 LA manifests ``asvspoof2019_la_<split>.csv``.

    Arguments
    ---------
    data_folder : str or Path
        The ``LA/`` folder.
    save_folder : str or Path
        Where the manifests go.
    splits : sequence of str
        Any of ``train``, ``dev``, ``eval``; splits without a protocol file
        are skipped with a log line.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``asvspoof2019_la_<split>_skipped.csv``) instead of raising.
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
        protocol = folder / "ASVspoof2019_LA_cm_protocols" / PROTOCOLS[split]
        audio_dir = folder / f"ASVspoof2019_LA_{split}" / "flac"

        def read(protocol=protocol, audio_dir=audio_dir):
            """Yields the utterances of this split's protocol, one per line."""
            for line in read_protocol(protocol, COLUMNS):
                yield make_utterance(
                    line,
                    line["utt"],
                    audio_dir / f"{line['utt']}.flac",
                    line["key"],
                    line["system"],
                    speaker=line["speaker"],
                )

        sources[split] = SplitSource(protocol, read, (audio_dir,))
    return prepare_splits(
        "asvspoof2019_la",
        save_folder,
        sources,
        options={"data_folder": str(folder)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/asvspoof2019_prepare.py --help``)."""
    parser = build_parser(prepare_asvspoof2019, DATA_FOLDER_HELP, SPLITS)
    run_cli(prepare_asvspoof2019, parser, argv)


if __name__ == "__main__":
    main()
