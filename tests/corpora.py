"""Small corpora on disk in each corpus' real layout, for data-prep and recipe tests.

Protocol lines come from ``tests/data/protocols/`` (real lines of the published
protocols); the audio is short noise written with soundfile (FLAC or WAV as the
corpus uses).
"""

import re
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from data_prep import (
    asvspoof5_prepare,
    asvspoof2019_prepare,
    asvspoof2021_prepare,
    ctrsvdd_prepare,
    in_the_wild_prepare,
    partialspoof_prepare,
)

PROTOCOLS = Path(__file__).resolve().parent / "data" / "protocols"
RATE = 16000

# Bona fide key lines: the LA/DF key excerpts hold spoof rows only.
# LA: quoted verbatim in the official 2021 t-DCF/t-EER READMEs as a CM key line.
LA_BONAFIDE_KEY = "LA_0020 LA_E_7294490 g722 loc_tx bonafide bonafide notrim eval"
# DF: built by the documented 13-column layout (no real bona fide line is quoted).
DF_BONAFIDE_KEY = (
    "LA_0027 DF_E_2000031 low_mp3 asvspoof bonafide bonafide notrim eval bonafide - - - -"
)


def protocol_lines(name, n_fields):
    """Non-comment lines of a protocol excerpt with ``n_fields`` fields."""
    lines = []
    for text in (PROTOCOLS / name).read_text().splitlines():
        if text.strip() and not text.startswith("#") and len(text.split()) == n_fields:
            lines.append(text.strip())
    return lines


def write_audio(path, index):
    """Writes 0.2-1.0 s of noise; returns its duration in seconds."""
    seconds = 0.2 + 0.1 * (index % 9)
    frames = int(round(seconds * RATE))
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(index).uniform(-0.1, 0.1, frames).astype("float32")
    sf.write(path, noise, RATE)
    return frames / RATE


@dataclass
class Corpus:
    """A small corpus on disk and how to prepare it."""

    name: str
    prepare: object  # prepare(save_folder, **options)
    root: Path
    split: str  # the split the bad-input tests break
    protocol: Path  # that split's protocol
    label_field: int  # index of the label among the protocol fields
    audio: dict = field(default_factory=dict)  # ID -> path, rows of `split` in its manifest
    durations: dict = field(default_factory=dict)  # ID -> seconds, every split
    csv: bool = False


def _add_audio(corpus, utt_id, path, kept=True):
    corpus.durations[utt_id] = write_audio(path, len(corpus.durations))
    if kept:
        corpus.audio[utt_id] = path


def build_ctrsvdd(root):
    dev = protocol_lines("ctrsvdd.txt", 6)
    # test.txt: the line a third party quotes from the labelled test protocol.
    quoted = (PROTOCOLS / "ctrsvdd.txt").read_text()
    test = re.findall(r"'(kising CtrSVDD_\S+ \S+ - A\d+ deepfake)'", quoted)
    assert len(dev) == 22 and len(test) == 1
    root.mkdir(parents=True)
    corpus = Corpus(
        "ctrsvdd",
        partial(ctrsvdd_prepare.prepare_ctrsvdd, root),
        root,
        "dev",
        root / "dev.txt",
        5,
    )
    for split, lines in (("dev", dev), ("test", test)):
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            name = line.split()[2]
            _add_audio(corpus, name, root / f"{split}_set" / f"{name}.flac", split == "dev")
    return corpus


def asvspoof2019_sections():
    sections, current = {"train": [], "dev": [], "eval": []}, "train"
    for text in (PROTOCOLS / "asvspoof2019_la.txt").read_text().splitlines():
        if text.startswith("#"):
            current = next((s for s in ("dev", "eval") if f"cm.{s}.trl" in text), current)
        elif text.strip():
            sections[current].append(text.strip())
    return sections


def build_asvspoof2019(root):
    sections = asvspoof2019_sections()
    folder = root / "ASVspoof2019_LA_cm_protocols"
    folder.mkdir(parents=True)
    corpus = Corpus(
        "asvspoof2019",
        partial(asvspoof2019_prepare.prepare_asvspoof2019, root),
        root,
        "train",
        folder / asvspoof2019_prepare.PROTOCOLS["train"],
        4,
    )
    for split, lines in sections.items():
        (folder / asvspoof2019_prepare.PROTOCOLS[split]).write_text("\n".join(lines) + "\n")
        for line in lines:
            utt = line.split()[1]
            path = root / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac"
            _add_audio(corpus, utt, path, split == "train")
    return corpus


def build_asvspoof2021(root, track):
    if track == "LA":
        lines = protocol_lines("asvspoof2021_la_keys.txt", 8) + [LA_BONAFIDE_KEY]
    else:
        lines = protocol_lines("asvspoof2021_df_keys.txt", 13) + [DF_BONAFIDE_KEY]
    keys = root / "keys" / track / "CM" / "trial_metadata.txt"
    keys.parent.mkdir(parents=True)
    keys.write_text("\n".join(lines) + "\n")
    corpus = Corpus(
        f"asvspoof2021_{track}",
        partial(asvspoof2021_prepare.prepare_asvspoof2021, root, track=track),
        root,
        "eval",
        keys,
        5,
    )
    for line in lines:
        fields = line.split()
        path = root / f"ASVspoof2021_{track}_eval" / "flac" / f"{fields[1]}.flac"
        _add_audio(corpus, fields[1], path, fields[7] == "eval")
    return corpus


def build_asvspoof5(root):
    lines = protocol_lines("asvspoof5.txt", 10)
    by_split = {
        split: [line for line in lines if line.split()[1].startswith(prefix)]
        for split, prefix in (("train", "T_"), ("dev", "D_"), ("eval", "E_"))
    }
    assert [len(v) for v in by_split.values()] == [2, 8, 1]
    root.mkdir(parents=True)
    corpus = Corpus(
        "asvspoof5",
        partial(asvspoof5_prepare.prepare_asvspoof5, root),
        root,
        "dev",
        root / asvspoof5_prepare.PROTOCOLS["dev"],
        8,
    )
    for split, split_lines in by_split.items():
        # train/dev next to the audio, eval in the ASVspoof5_protocols/ folder of the tar.
        folder = root / "ASVspoof5_protocols" if split == "eval" else root
        folder.mkdir(exist_ok=True)
        (folder / asvspoof5_prepare.PROTOCOLS[split]).write_text("\n".join(split_lines) + "\n")
        for line in split_lines:
            name = line.split()[1]
            audio_dir = asvspoof5_prepare.AUDIO_DIRS[split]
            _add_audio(corpus, name, root / audio_dir / f"{name}.flac", split == "dev")
    return corpus


def build_partialspoof(root):
    lines = protocol_lines("partialspoof.txt", 5)
    assert len(lines) == 5
    folder = root / "protocols" / "PartialSpoof_LA_cm_protocols"
    folder.mkdir(parents=True)
    protocol = folder / partialspoof_prepare.PROTOCOLS["train"]
    protocol.write_text("\n".join(lines) + "\n")
    corpus = Corpus(
        "partialspoof",
        partial(partialspoof_prepare.prepare_partialspoof, root),
        root,
        "train",
        protocol,
        4,
    )
    for line in lines:
        utt = line.split()[1]
        _add_audio(corpus, utt, root / "train" / "con_wav" / f"{utt}.wav")
    # Segment labels as released: pickled dict of '0'/'1' strings (1 = bona fide),
    # one per segment; spoofed utterances get a spoofed middle.
    (root / "segment_labels").mkdir()
    for shift in (0.02, 0.16):
        table = {}
        for utt, seconds in corpus.durations.items():
            n = max(1, int(seconds / shift))
            labels = np.full(n, "1", dtype="<U21")
            if utt.startswith("CON_"):
                labels[n // 3 : max(n // 3 + 1, 2 * n // 3)] = "0"
            table[utt] = labels
        np.save(root / "segment_labels" / f"train_seglab_{shift:.2f}.npy", table)
    return corpus


def build_in_the_wild(root):
    lines = (PROTOCOLS / "in_the_wild.txt").read_text().splitlines()
    meta = [line for line in lines if line and not line.startswith("#")]
    assert meta[0] == "file,speaker,label" and len(meta) == 4
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    corpus = Corpus(
        "in_the_wild",
        partial(in_the_wild_prepare.prepare_in_the_wild, root),
        root,
        "eval",
        root / "meta.csv",
        2,
        csv=True,
    )
    for line in meta[1:]:
        name = line.split(",")[0]
        _add_audio(corpus, Path(name).stem, root / name)
    return corpus


BUILDERS = {
    "ctrsvdd": build_ctrsvdd,
    "asvspoof2019": build_asvspoof2019,
    "asvspoof2021_LA": partial(build_asvspoof2021, track="LA"),
    "asvspoof2021_DF": partial(build_asvspoof2021, track="DF"),
    "asvspoof5": build_asvspoof5,
    "partialspoof": build_partialspoof,
    "in_the_wild": build_in_the_wild,
}


def add_training_split(corpus, source_split, new_split):
    """Copies a split's protocol and audio under another split name.

    The protocol excerpts of CtrSVDD (dev) and PartialSpoof (train)
    cover one split; a recipe needs a training and a validation split.
    """
    root = corpus.root
    if corpus.name == "ctrsvdd":
        shutil.copy(root / f"{source_split}.txt", root / f"{new_split}.txt")
        shutil.copytree(root / f"{source_split}_set", root / f"{new_split}_set")
    elif corpus.name == "partialspoof":
        folder = root / "protocols" / "PartialSpoof_LA_cm_protocols"
        shutil.copy(
            folder / partialspoof_prepare.PROTOCOLS[source_split],
            folder / partialspoof_prepare.PROTOCOLS[new_split],
        )
        shutil.copytree(root / source_split, root / new_split)
        for path in (root / "segment_labels").glob(f"{source_split}_seglab_*.npy"):
            shutil.copy(path, path.with_name(path.name.replace(source_split, new_split, 1)))
    else:
        raise ValueError(f"no split copy for {corpus.name}")
    return corpus


def build_custom_tree(root, per_class=20):
    """A user's folder of own recordings: ``bonafide/`` and ``spoof/<attack>/`` (custom recipe)."""
    for index in range(per_class):
        write_audio(root / "bonafide" / f"spk{index % 5}" / f"utt{index}.wav", index)
        attack = "tts" if index % 2 else "vocoder"
        write_audio(root / "spoof" / attack / f"utt{index}.flac", 100 + index)
    return root

