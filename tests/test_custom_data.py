"""Your own data: data_prep/custom_prepare.py and hparams/nes2net_x_custom.yaml."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.common import DataPrepError, MissingAudioError, ProtocolError
from data_prep.custom_prepare import prepare_custom
from data_prep.demo_prepare import prepare_demo_corpus
from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def write(path, seconds=0.5, seed=0):
    """A short noise file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * 16000))
    sf.write(path, noise.astype("float32"), 16000)
    return path


def manifests_of(paths):
    """Split -> manifest table."""
    return {split: read_manifest(path) for split, path in paths.items()}


def test_folder_tree_gives_labels_attacks_and_stratified_splits(tmp_path):
    data = tmp_path / "data"
    for i in range(20):
        write(data / "bonafide" / f"spk{i % 4}" / f"b{i}.wav", seed=i)
        write(data / "spoof" / ("vits" if i % 2 else "griffin_lim") / f"s{i}.flac", seed=100 + i)
    write(data / "spoof" / "loose.wav", seed=999)  # right under spoof/: attack unknown
    tables = manifests_of(prepare_custom(data, tmp_path / "out"))
    assert sorted(tables) == ["dev", "test", "train"]
    all_rows = sum(len(t) for t in tables.values())
    assert all_rows == 41 and len(tables["train"]) == 33  # 80% of each class
    for table in tables.values():
        assert set(table["label"]) == {"bonafide", "spoof"}
    attacks = set().union(*(set(t["attack"]) for t in tables.values()))
    assert attacks == {"-", "vits", "griffin_lim", "unknown"}
    assert "bonafide-spk1-b1" in set().union(*(set(t["ID"]) for t in tables.values()))
    # Idempotent: the same tree is not prepared again.
    again = tmp_path / "out" / "custom_train.csv"
    before = again.stat().st_mtime_ns
    prepare_custom(data, tmp_path / "out")
    assert again.stat().st_mtime_ns == before


def speaker_list(tmp_path, n_speakers=12, per_speaker=4, extra_columns=""):
    """A CSV list with speakers (relative paths), half bona fide, half spoof per speaker."""
    lines = ["path,label,attack,speaker" + extra_columns]
    for s in range(n_speakers):
        for k in range(per_speaker):
            label = "bonafide" if k % 2 == 0 else "spoof"
            name = f"audio/sp{s}_{k}.wav"
            write(tmp_path / name, seed=s * 10 + k)
            lines.append(f"{name},{label},{'' if label == 'bonafide' else 'tts' + str(k)},sp{s}")
    return lines


def test_list_file_split_by_speaker_never_shares_a_speaker(tmp_path):
    lines = speaker_list(tmp_path)
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    tables = manifests_of(prepare_custom(listing, tmp_path / "out", split_seed=7))
    speakers = {split: set(table["speaker"]) for split, table in tables.items()}
    assert sorted(speakers) == ["dev", "test", "train"]
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["dev"] & speakers["test"])
    assert sum(len(s) for s in speakers.values()) == 12
    # Relative paths start from the list's folder.
    assert all(Path(w).is_file() for t in tables.values() for w in t["wav"])


def test_tsv_with_given_splits(tmp_path):
    lines = ["path\tlabel\tattack\tsplit"]
    for i, split in enumerate(["train"] * 4 + ["dev"] * 2 + ["test"] * 2):
        label = "genuine" if i % 2 == 0 else "fake"
        lines.append(f"a/{i}.wav\t{label}\t{'' if i % 2 == 0 else 'x'}\t{split}")
        write(tmp_path / "a" / f"{i}.wav", seed=i)
    listing = tmp_path / "list.tsv"
    listing.write_text("\n".join(lines) + "\n")
    tables = manifests_of(prepare_custom(listing, tmp_path / "out"))
    assert {split: len(t) for split, t in tables.items()} == {"train": 4, "dev": 2, "test": 2}
    assert set(tables["train"]["label"]) == {"bonafide", "spoof"}


@pytest.mark.parametrize(
    "row, error, message",
    [
        ("audio/new.wav,maybe,,sp0", ProtocolError, "unknown label 'maybe'"),
        ("audio/none.wav,bonafide,,sp0", MissingAudioError, "audio missing for 1"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, error, message):
    write(tmp_path / "audio" / "new.wav")
    lines = speaker_list(tmp_path) + [row]
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(error, match=message) as caught:
        prepare_custom(listing, tmp_path / "out")
    if error is ProtocolError:
        assert "line 50" in str(caught.value)
    else:
        assert "none.wav" in str(caught.value)


def test_a_speaker_in_two_given_splits_is_refused(tmp_path):
    lines = ["path,label,attack,speaker,split"]
    for i, (speaker, split) in enumerate([("a", "train"), ("a", "train"), ("b", "dev"), ("b", "dev"),
                                          ("a", "test"), ("c", "test")]):
        write(tmp_path / f"{i}.wav", seed=i)
        label = "bonafide" if i % 2 == 0 else "spoof"
        lines.append(f"{i}.wav,{label},{'' if i % 2 == 0 else 'x'},{speaker},{split}")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataPrepError, match=r"speaker 'a' is in several splits: train \(line 2\), test \(line 6\)"):
        prepare_custom(listing, tmp_path / "out")


def test_a_split_without_spoofs_is_refused(tmp_path):
    lines = ["path,label,attack,split"]
    for i, (label, split) in enumerate([("bonafide", "train"), ("spoof", "train"),
                                         ("bonafide", "test"), ("bonafide", "test")]):
        write(tmp_path / f"{i}.wav", seed=i)
        lines.append(f"{i}.wav,{label},{'x' if label == 'spoof' else ''},{split}")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataPrepError, match=r"the test split has only bonafide rows \(lines 4, 5\)"):
        prepare_custom(listing, tmp_path / "out")


def test_unknown_split_and_clashing_ids_are_refused(tmp_path):
    write(tmp_path / "a.wav")
    write(tmp_path / "a.flac")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split\na.wav,bonafide,valid\n")
    with pytest.raises(ProtocolError, match="line 2: split 'valid'; expected one of train, dev, test"):
        prepare_custom(listing, tmp_path / "out")
    listing.write_text("path,label\na.wav,bonafide\na.flac,spoof\n")
    with pytest.raises(ProtocolError, match="line 3: 'a.flac' gets the ID 'a' of line 2"):
        prepare_custom(listing, tmp_path / "out")
    listing.write_text("path,label\na.wav,bonafide\na.wav,spoof\n")
    with pytest.raises(ProtocolError, match=r"line 3: 'a.wav' is listed again \(first on line 2\)"):
        prepare_custom(listing, tmp_path / "out")


# ------------------------------------------------------------------ the recipe


@pytest.fixture(scope="module")
def demo_audio(tmp_path_factory):
    """The demo corpus's audio laid out as a user's folder tree and as a CSV list."""
    root = tmp_path_factory.mktemp("custom")
    manifests = prepare_demo_corpus(root / "demo", root / "demo_manifests", n_train=16, n_dev=6, n_test=6)
    tree = root / "tree"
    rows = ["path,label,attack,speaker"]
    for path in manifests.values():
        for row in read_manifest(path).itertuples():
            folder = tree / ("bonafide" if row.label == "bonafide" else f"spoof/{row.attack}")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(row.wav, folder / Path(row.wav).name)
            rel = os.path.relpath(folder / Path(row.wav).name, root)
            rows.append(f"{rel},{row.label},{'' if row.label == 'bonafide' else row.attack},{row.speaker}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny_wavlm")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tree", "list.csv"])
def test_custom_recipe_trains_on_your_folder_or_list(layout, demo_audio, tiny_wavlm, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "recipes/train.py", "hparams/nes2net_x_custom.yaml",
         f"--data_folder={demo_audio / layout}", f"--output_folder={out}",
         f"--ssl_source={tiny_wavlm}", "--ssl_dim=64", "--ssl_layers=3",
         "--number_of_epochs=1", "--batch_size=8", "--num_workers=0", "--rawboost_algo=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-1].startswith("custom_test: EER")
    for split in ("train", "dev", "test"):
        assert (out / "save" / "manifests" / f"custom_{split}.csv").is_file()
    assert (out / "decision.json").is_file()
    assert (out / "scores" / "custom_test_report.json").is_file()
