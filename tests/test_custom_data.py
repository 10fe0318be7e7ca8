"""Your own data: data_prep/custom_prepare.py and hparams/nes2net_x_custom.yaml."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.common import DataPrepError, MissingAudioError, ProtocolError
from data_prep.custom_prepare import prepare_custom
from data_prep.demo_prepare import SEEN_ATTACKS, prepare_demo_corpus
from speechbrain_nes2net.evaluation.metrics import compute_eer
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
def demo_list(tmp_path_factory):
    """The demo corpus's audio as a user's list file with speakers and given splits.

    The demo's test split also holds an attack never seen in training (A04);
    returns the list and each demo utterance's true label and attack.
    """
    root = tmp_path_factory.mktemp("custom")
    manifests = prepare_demo_corpus(
        root / "demo", root / "demo_manifests", n_train=80, n_dev=20, n_test=40
    )
    rows, truth = ["path,label,attack,speaker,split"], {}
    for split, path in manifests.items():
        for row in read_manifest(path).itertuples():
            attack = "" if row.label == "bonafide" else row.attack
            rel = os.path.relpath(row.wav, root)
            rows.append(f"{rel},{row.label},{attack},{row.speaker},{split}")
            truth[row.ID] = (row.label, row.attack)
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root / "list.csv", truth


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_custom_recipe_learns_on_the_demo_audio(precision, demo_list, tmp_path):
    # The custom recipe (its data preparation, splits, model and schedule) on the
    # demo audio given as a list file: 80 + 20 + 40 bona fide voices, each with
    # its spoofed twin; trained in float32, and with SpeechBrain's --precision=bf16
    # (autocast on the CPU). CI-sized changes only: a tiny WavLM of width 256 (the
    # recipe's Nes2Net-X nesting, 8 x 8, then has 32 channels a group; at width 64
    # it has 8, and learned to only 20-30% EER in 6 epochs), 6 epochs of 1 s crops,
    # the demo's learning rates (the recipe's 1e-6 fine-tunes a pre-trained
    # WavLM-Large), no RawBoost.
    listing, truth = demo_list
    ssl = make_tiny_ssl_model(tmp_path / "tiny_wavlm", hidden_size=256, intermediate_size=512,
                              num_heads=4)  # fmt: skip
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "recipes/train.py", "hparams/nes2net_x_custom.yaml",
         f"--data_folder={listing}", f"--output_folder={out}", f"--ssl_source={ssl}",
         "--ssl_dim=256", "--ssl_layers=3", "--number_of_epochs=6", "--batch_size=16",
         "--train_samples=16000", "--lr_backend=0.001", "--lr_ssl=0.0005",
         "--rawboost_algo=0", "--num_workers=0", "--noprogressbar", f"--precision={precision}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-1].startswith("custom_test: EER")
    assert (out / "decision.json").is_file()
    assert (out / "scores" / "custom_test_report.json").is_file()
    log = (out / "log.txt").read_text()
    assert f"Using training precision: `--precision={precision}`" in log
    # Scored against the demo's own labels (not the manifests the recipe wrote,
    # which a label bug in data preparation would flip alike). IDs are the list
    # paths: demo-<split>-<demo ID>.
    scores = {}
    for line in (out / "scores" / "custom_test_scores.txt").read_text().splitlines():
        utt, score = line.split()
        scores[utt.split("-")[-1]] = float(score)
    assert len(scores) == 80 and set(scores) <= set(truth)
    bonafide = [v for k, v in scores.items() if truth[k][0] == "bonafide"]
    seen = [v for k, v in scores.items() if truth[k][1] in SEEN_ATTACKS]
    assert (len(bonafide), len(seen)) == (40, 30)
    # Measured on the seen attacks, seeds 420 (the recipe's), 1, 2, 3, 4, 5: 0.00% EER
    # but 2.9% for seed 4, in fp32 and in bf16 alike. 10% (3 of 30 spoofs) leaves
    # room for another CPU's arithmetic; it fails on labels read one list row late
    # (100%), on labels shuffled across rows (30%) and on a run whose optimiser
    # steps are skipped (36%, the untrained model).
    eer, _ = compute_eer(bonafide, seen)
    assert eer <= 0.10, eer
