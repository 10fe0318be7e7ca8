"""Segment labels for localisation: the synthetic corpus, the polarity check, labels that follow crops."""

import numpy as np
import pytest
import soundfile as sf
import torch

from data_prep.partialspoof_demo import build_partialspoof_demo, read_truth, segment_labels
from data_prep.partialspoof_prepare import prepare_partialspoof
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.segments import (
    SEGMENT_SHIFTS,
    check_segment_labels,
    load_segment_labels,
)
from speechbrain_nes2net.training.dataio import crop_indices, localization_pipeline, segment_truth


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = build_partialspoof_demo(tmp_path_factory.mktemp("ps") / "database", 6, 3, 3)
    manifests = prepare_partialspoof(root, root.parent / "manifests")
    return root, manifests


def test_synthetic_labels_are_the_truth_at_every_released_resolution(corpus):
    root, manifests = corpus
    truth = read_truth(root)
    frame = read_manifest(manifests["train"])
    assert set(frame["label"]) == {"bonafide", "spoof"} and set(frame["attack"]) == {"-", "CON"}
    for utt_id, template in zip(frame["ID"], frame["segment_labels"]):
        duration, spans = truth[utt_id]["duration"], truth[utt_id]["spoof"]
        assert duration == pytest.approx(frame.set_index("ID").loc[utt_id, "duration"])
        for shift in SEGMENT_SHIFTS:
            labels = load_segment_labels(template, utt_id, shift)
            assert labels.size == int(np.ceil(round(duration / shift, 6)))
            for k, value in enumerate(labels):
                start, end = k * shift, min((k + 1) * shift, duration)
                overlaps = any(min(end, e) > max(start, s) for s, e in spans)
                assert value == (0 if overlaps else 1), (utt_id, shift, k)


def test_the_spliced_stretch_is_where_the_truth_says(corpus):
    # Outside the spoofed stretches (and their 5 ms cross-fades) the audio is the
    # bona fide voice; inside, its re-synthesis: the two differ there only.
    root, _ = corpus
    truth = read_truth(root)
    utt_id = next(u for u, t in truth.items() if t["split"] == "train" and t["spoof"])
    wav, rate = sf.read(root / "train" / "con_wav" / f"{utt_id}.wav")
    (start, end), *_ = truth[utt_id]["spoof"]
    assert rate == 16000 and 0 < start < end < len(wav) / rate
    # A vocoder-like re-synthesis keeps loudness: the stretch is as loud as the rest.
    inside = wav[int(start * rate) : int(end * rate)]
    assert 0.2 < np.sqrt(np.mean(inside**2)) / np.sqrt(np.mean(wav**2)) < 5


def test_polarity_check_passes_the_release_layout_and_fails_an_inverted_file(corpus, tmp_path):
    root, manifests = corpus
    counts = check_segment_labels(manifests["train"], 0.16)
    assert counts["n_utterances"] == 6 and 0 < counts["n_spoof_segments"] < counts["n_segments"]
    # The same file with '0' and '1' swapped: every bona fide utterance looks spoofed.
    frame = read_manifest(manifests["train"])
    table = np.load(root / "segment_labels" / "train_seglab_0.16.npy", allow_pickle=True).item()
    inverted = {k: np.where(v == "1", "0", "1") for k, v in table.items()}
    folder = tmp_path / "segment_labels"
    folder.mkdir()
    np.save(folder / "train_seglab_0.16.npy", inverted)
    frame["segment_labels"] = str(folder / "train_seglab_{shift}.npy")
    frame.to_csv(tmp_path / "inverted.csv", index=False)
    with pytest.raises(ValueError, match="polarity is the opposite") as err:
        check_segment_labels(tmp_path / "inverted.csv", 0.16)
    assert "train_seglab_0.16.npy" in str(err.value)
    del inverted[frame["ID"].iloc[-1]]
    np.save(folder / "train_seglab_0.16.npy", inverted)
    with pytest.raises(ValueError, match="1 utterances have no labels"):
        check_segment_labels(tmp_path / "inverted.csv", 0.16)


def test_random_crops_start_on_the_label_grid_and_keep_their_labels_exact(corpus):
    root, manifests = corpus
    frame = read_manifest(manifests["train"])
    row = frame[frame["label"] == "spoof"].iloc[0]
    full, _ = sf.read(row["wav"], dtype="float32")
    shift, samples = 0.04, 640
    labels = load_segment_labels(row["segment_labels"], row["ID"], shift)
    pipeline = localization_pipeline(shift, num_samples=16000, random_crop=True)
    offsets = set()
    torch.manual_seed(0)
    for _ in range(10):
        sig, error, truth = list(pipeline.func(row["wav"], row["ID"], row["segment_labels"]))
        assert error == ""
        matches = [o for o in range(0, len(full) - 16000 + 1, samples)
                   if np.allclose(full[o : o + 16000], sig.numpy())]
        assert matches, "the crop does not start on the 40 ms grid"
        offset = matches[0]
        offsets.add(offset)
        first = offset // samples
        assert truth.tolist() == labels[first : first + 16000 // samples].tolist()
    assert len(offsets) > 3


def test_labels_follow_repeat_padding_and_off_grid_crops():
    # Off the grid, a crop segment straddling a spoofed source segment is spoof.
    assert segment_truth([1, 0, 1, 1], torch.arange(1, 7), 2).tolist() == [0, 0, 1]
    # A short file repeat-padded: its labels repeat.
    indices = crop_indices(4, 10)
    assert indices.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert segment_truth([0, 1], indices, 2).tolist() == [0, 1, 0, 1, 0]
    # A stretch on the grid spoofs its segments only; one inside a segment spoofs it.
    assert segment_labels(0.4, [(0.2, 0.3)], 0.1).tolist() == ["1", "1", "0", "1"]
    assert segment_labels(0.4, [(0.21, 0.29)], 0.1).tolist() == ["1", "1", "0", "1"]
    # Labels of a whole file at its own resolution are its labels.
    labels = segment_labels(1.0, [(0.33, 0.51)], 0.08)
    whole = segment_truth(labels.astype(int), torch.arange(16000), 1280)
    assert whole.tolist() == labels.astype(int).tolist()
