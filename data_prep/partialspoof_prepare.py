"""PartialSpoof (v1.2, zenodo record 5766198): partially spoofed utterances.

Layout of ``data_folder`` (the ``database/`` folder of the release)::

    protocols/PartialSpoof_LA_cm_protocols/PartialSpoof.LA.cm.{train,dev,eval}.trl.txt
    train/con_wav/<id>.wav   dev/con_wav/<id>.wav   eval/con_wav/<id>.wav
    segment_labels/{train,dev,eval}_seglab_{0.01,0.02,0.04,0.08,0.16,0.32,0.64}.npy

Protocols have the ASVspoof 2019 layout ``speaker utt - system key``, system
``CON`` for the concatenated (spoof) utterances, which becomes ``attack``.

Frame-level truth: each row's ``segment_labels`` column holds the absolute path
template of its split's segment label files, with a ``{shift}`` placeholder for
the resolution in seconds, e.g. ``/data/database/segment_labels/train_seglab_{shift}.npy``.
:func:`~speechbrain_nes2net.segments.load_segment_labels` reads one
utterance at any published shift.

Command line::

    python data_prep/partialspoof_prepare.py /data/PartialSpoof/database manifests/partialspoof

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "protocols" / "PartialSpoof_LA_cm_protocols").mkdir(parents=True)
>>> (root / "dev" / "con_wav").mkdir(parents=True)
>>> sf.write(root / "dev" / "con_wav" / "CON_D_0000000.wav", np.zeros(5120), 16000)
>>> _ = (root / "protocols" / "PartialSpoof_LA_cm_protocols" / PROTOCOLS["dev"]).write_text(
...     "LA_0069 CON_D_0000000 - CON spoof\\n")
>>> (root / "segment_labels").mkdir()
>>> np.save(root / "segment_labels" / "dev_seglab_0.16.npy",
...         {"CON_D_0000000": np.array(["1", "0"])}, allow_pickle=True)
>>> paths = prepare_partialspoof(root, root / "manifests")
>>> import pandas as pd
>>> template = pd.read_csv(paths["dev"])["segment_labels"][0]
>>> template.endswith("segment_labels/dev_seglab_{shift}.npy")
True
>>> from speechbrain_nes2net.segments import load_segment_labels
>>> load_segment_labels(template, "CON_D_0000000", 0.16)
array([1, 0])
"""

import logging
import sys
from pathlib import Path

if not __package__:
    # Run as a script (``python data_prep/partialspoof_prepare.py``): Python puts data_prep/
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
from speechbrain_nes2net.segments import SEGMENT_SHIFTS, segment_label_path  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "eval")
PROTOCOLS = {split: f"PartialSpoof.LA.cm.{split}.trl.txt" for split in SPLITS}
COLUMNS = ("speaker", "utt", "unused", "system", "key")
DATA_FOLDER_HELP = (
    "the PartialSpoof database/ folder holding protocols/PartialSpoof_LA_cm_protocols/, "
    "{train,dev,eval}/con_wav/ and segment_labels/"
)


def prepare_partialspoof(
    data_folder, save_folder, splits=SPLITS, skip_missing=False, num_workers=None
):
    """Writes PartialSpoof manifests ``partialspoof_<split>.csv``.

    Arguments
    ---------
    data_folder : str or Path
        The ``database/`` folder.
    save_folder : str or Path
        Where the manifests go.
    splits : sequence of str
        Any of ``train``, ``dev``, ``eval``; splits without a protocol file
        are skipped with a log line.
    skip_missing : bool
        Leave out rows whose audio is missing (listed in
        ``partialspoof_<split>_skipped.csv``) instead of raising.
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
        protocol = folder / "protocols" / "PartialSpoof_LA_cm_protocols" / PROTOCOLS[split]
        audio_dir = folder / split / "con_wav"
        template = str(folder / "segment_labels" / f"{split}_seglab_{{shift}}.npy")

        def read(protocol=protocol, audio_dir=audio_dir, template=template, split=split):
            """Yields the utterances of this split's protocol, one per line."""
            if not any(Path(segment_label_path(template, s)).is_file() for s in SEGMENT_SHIFTS):
                logger.warning(
                    "PartialSpoof %s: no segment label file %s; the manifest references "
                    "it anyway (utterance-level use does not need it)",
                    split,
                    template,
                )
            for line in read_protocol(protocol, COLUMNS):
                yield make_utterance(
                    line,
                    line["utt"],
                    audio_dir / f"{line['utt']}.wav",
                    line["key"],
                    line["system"],
                    speaker=line["speaker"],
                    segment_labels=template,
                )

        sources[split] = SplitSource(protocol, read, (audio_dir,))
    return prepare_splits(
        "partialspoof",
        save_folder,
        sources,
        options={"data_folder": str(folder)},
        skip_missing=skip_missing,
        num_workers=num_workers,
        expected=DATA_FOLDER_HELP,
        log=logger,
    )


def main(argv=None):
    """Command line entry point (``python data_prep/partialspoof_prepare.py --help``)."""
    parser = build_parser(prepare_partialspoof, DATA_FOLDER_HELP, SPLITS)
    run_cli(prepare_partialspoof, parser, argv)


if __name__ == "__main__":
    main()
