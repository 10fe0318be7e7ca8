"""ASVspoof 2021 logical access (LA) and speech deepfake (DF) evaluation sets.

Layout of ``data_folder``: the evaluation audio (LA: ASVspoof2021_LA_eval.tar.gz,
DF: ASVspoof2021_DF_eval_part00..03.tar.gz, zenodo records 4837263 and
4835108) and the keys (LA-keys-full.tar.gz, DF-keys-full.tar.gz from
asvspoof.org/index2021.html) extracted side by side::

    ASVspoof2021_LA_eval/flac/<trial>.flac
    ASVspoof2021_DF_eval/flac/<trial>.flac
    keys/LA/CM/trial_metadata.txt
    keys/DF/CM/trial_metadata.txt

Keys are space-separated, read by column (not by "last field"):

- LA, 8 columns: ``speaker trial codec transmission attack key trim subset``;
- DF, 13 columns: ``speaker trial codec source attack key trim subset vocoder``
  then 4 VCC fields (task, team, gender pair, language).

Only rows whose ``subset`` is in ``subsets`` are kept; the published results
use ``eval``, disjoint from ``progress`` and ``hidden``. Manifest metadata:
LA ``speaker, codec, transmission, trim, subset``; DF ``speaker, codec, source,
trim, subset, vocoder``.

Command line::

    python data_prep/asvspoof2021_prepare.py /data/ASVspoof2021 manifests/asvspoof2021 --track DF

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "keys" / "LA" / "CM").mkdir(parents=True)
>>> (root / "ASVspoof2021_LA_eval" / "flac").mkdir(parents=True)
>>> for trial in ("LA_E_1", "LA_E_2"):
...     sf.write(root / "ASVspoof2021_LA_eval" / "flac" / f"{trial}.flac", np.zeros(800), 16000)
>>> _ = (root / "keys" / "LA" / "CM" / "trial_metadata.txt").write_text(
...     "LA_0009 LA_E_1 alaw ita_tx A07 spoof notrim eval\\n"
...     "LA_0009 LA_E_2 alaw loc_tx A07 spoof notrim progress\\n")
>>> paths = prepare_asvspoof2021(root, root / "manifests", track="LA")
>>> len(Path(paths["eval"]).read_text().splitlines())  # header + the eval row
2
"""

import logging
import sys
from pathlib import Path

if not __package__:
    # Run as a script (``python data_prep/asvspoof2021_prepare.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import (  # noqa: E402
    OptionError,
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

TRACKS = ("LA", "DF")
SUBSETS = ("eval", "progress", "hidden")
COLUMNS = {
    "LA": ("speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset"),
    "DF": (
        "speaker",
        "trial",
        "codec",
        "source",
        "attack",
        "key",
        "trim",
        "subset",
        "vocoder",
        "task",
        "team",
        "gender_pair",
        "language",
    ),
}
METADATA = {
    "LA": ("speaker", "codec", "transmission", "trim", "subset"),
    "DF": ("speaker", "codec", "source", "trim", "subset", "vocoder"),
}
DATA_FOLDER_HELP = (
    "folder holding ASVspoof2021_{LA,DF}_eval/flac/ and keys/{LA,DF}/CM/trial_metadata.txt"
)


def prepare_asvspoof2021(
    data_folder,
    save_folder,
    track,
    subsets=("eval",),
    skip_missing=False,
    num_workers=None,
):
    """Writes the ASVspoof 2021 LA or DF evaluation manifest ``asvspoof2021_<track>_eval.csv``.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``ASVspoof2021_<track>_eval/flac/`` and ``keys/<track>/CM/``.
    save_folder : str or Path
        Where the manifest goes.
    track : str
        ``LA`` or ``DF`` (case-insensitive).
    subsets : sequence of str
        Key subsets to keep: any of ``eval``, ``progress``, ``hidden``.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``asvspoof2021_<track>_eval_skipped.csv``) instead of raising.
    num_workers : int, optional
        Threads reading audio headers.

    Returns
    -------
    dict
        ``{"eval": manifest path}``.
    """
    track = str(track).upper()
    if track not in TRACKS:
        raise OptionError(f"unknown track {track!r}; choose from {', '.join(TRACKS)}")
    subsets = check_choices("subsets", subsets, SUBSETS)
    folder = data_folder_path(data_folder, DATA_FOLDER_HELP)
    protocol = folder / "keys" / track / "CM" / "trial_metadata.txt"
    audio_dir = folder / f"ASVspoof2021_{track}_eval" / "flac"

    def read():
        """Yields the utterances of the protocol, one per line."""
        total = kept = 0
        for line in read_protocol(protocol, COLUMNS[track]):
            # Every row is checked, kept or not: a key file is valid as a whole.
            utterance = make_utterance(
                line,
                line["trial"],
                audio_dir / f"{line['trial']}.flac",
                line["key"],
                line["attack"],
                **{column: line[column] for column in METADATA[track]},
            )
            total += 1
            if line["subset"] in subsets:
                kept += 1
                yield utterance
        logger.info(
            "ASVspoof 2021 %s: kept %d of %d key rows with subset in %s",
            track,
            kept,
            total,
            ", ".join(subsets),
        )

    return prepare_splits(
        f"asvspoof2021_{track.lower()}",
        save_folder,
        {"eval": SplitSource(protocol, read, (audio_dir,))},
        options={"data_folder": str(folder), "track": track, "subsets": sorted(subsets)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/asvspoof2021_prepare.py --help``)."""
    parser = build_parser(prepare_asvspoof2021, DATA_FOLDER_HELP)
    parser.add_argument(
        "--track", required=True, type=str.upper, choices=TRACKS, help="LA or DF evaluation set"
    )
    parser.add_argument(
        "--subsets",
        nargs="+",
        choices=SUBSETS,
        default=["eval"],
        help="key subsets to keep (default: eval, as in the published results)",
    )
    run_cli(prepare_asvspoof2021, parser, argv)


if __name__ == "__main__":
    main()
