"""ASVspoof 5 (track 1, stand-alone countermeasures).

Layout of ``data_folder`` (zenodo record 14498691: the flac_T, flac_D and
flac_E_eval archives and ASVspoof5_protocols.tar)::

    ASVspoof5.train.tsv                (or ASVspoof5_protocols/ASVspoof5.train.tsv)
    ASVspoof5.dev.track_1.tsv          (or ASVspoof5_protocols/...)
    ASVspoof5.eval.track_1.tsv         (or ASVspoof5_protocols/...)
    flac_T/<file>.flac
    flac_D/<file>.flac
    flac_E_eval/<file>.flac

Despite the suffix the protocols are space-separated, 10 columns:
``speaker file gender codec codec_q codec_seed attack_tag attack_label key tmp``.
``attack`` is ATTACK_LABEL (``A01``-``A32``; ``-`` for bona fide); metadata
``speaker, gender, codec, codec_q, codec_seed, attack_tag``.

Command line::

    python data_prep/asvspoof5_prepare.py /data/ASVspoof5 manifests/asvspoof5

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "flac_D").mkdir()
>>> sf.write(root / "flac_D" / "D_0000000190.flac", np.zeros(1600), 16000)
>>> _ = (root / "ASVspoof5.dev.track_1.tsv").write_text(
...     "D_0461 D_0000000190 M - - - - bonafide bonafide -\\n")
>>> paths = prepare_asvspoof5(root, root / "manifests")
>>> Path(paths["dev"]).read_text().splitlines()[0]
'ID,duration,wav,label,attack,speaker,gender,codec,codec_q,codec_seed,attack_tag'
"""

import logging
import sys
from pathlib import Path

if not __package__:
    # Run as a script (``python data_prep/asvspoof5_prepare.py``): Python puts data_prep/
    # itself on sys.path, not the repository root that holds the data_prep package
    # (only the library is installed, not data_prep).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import (  # noqa: E402
    SplitSource,
    build_parser,
    check_choices,
    data_folder_path,
    first_existing,
    make_utterance,
    prepare_splits,
    read_protocol,
    run_cli,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "eval")
PROTOCOLS = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
AUDIO_DIRS = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
COLUMNS = (
    "speaker",
    "file",
    "gender",
    "codec",
    "codec_q",
    "codec_seed",
    "attack_tag",
    "attack_label",
    "key",
    "tmp",
)
METADATA = ("speaker", "gender", "codec", "codec_q", "codec_seed", "attack_tag")
DATA_FOLDER_HELP = (
    "ASVspoof 5 folder holding the ASVspoof5.*.tsv protocols (directly or in "
    "ASVspoof5_protocols/) and flac_T/ flac_D/ flac_E_eval/"
)


def prepare_asvspoof5(
    data_folder, save_folder, splits=SPLITS, skip_missing=False, num_workers=None
):
    """Writes ASVspoof 5 track 1 manifests ``asvspoof5_<split>.csv``.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding the protocols and ``flac_T/ flac_D/ flac_E_eval/``.
    save_folder : str or Path
        Where the manifests go.
    splits : sequence of str
        Any of ``train``, ``dev``, ``eval``; splits without a protocol file
        are skipped with a log line.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``asvspoof5_<split>_skipped.csv``) instead of raising.
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
        protocol = first_existing(
            folder / PROTOCOLS[split], folder / "ASVspoof5_protocols" / PROTOCOLS[split]
        )
        audio_dir = folder / AUDIO_DIRS[split]

        def read(protocol=protocol, audio_dir=audio_dir):
            """Yields the utterances of this split's protocol, one per line."""
            for line in read_protocol(protocol, COLUMNS):
                yield make_utterance(
                    line,
                    line["file"],
                    audio_dir / f"{line['file']}.flac",
                    line["key"],
                    line["attack_label"],
                    **{column: line[column] for column in METADATA},
                )

        sources[split] = SplitSource(protocol, read, (audio_dir,))
    return prepare_splits(
        "asvspoof5",
        save_folder,
        sources,
        options={"data_folder": str(folder)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/asvspoof5_prepare.py --help``)."""
    run_cli(prepare_asvspoof5, build_parser(prepare_asvspoof5, DATA_FOLDER_HELP, SPLITS), argv)


if __name__ == "__main__":
    main()
