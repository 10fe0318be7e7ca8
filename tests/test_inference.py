"""The exported-model interface: EncoderClassifier slots and AntiSpoofModel."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio import audio_io
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.inference.interfaces import foreign_class

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.audio import load_audio
from speechbrain_nes2net.evaluation.calibration import (
    DecisionRule,
    ScoreCalibration,
    decision_from_dev,
)
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.lobes.pooling import frame_mask
from speechbrain_nes2net.lobes.ssl import (
    SSLFrontend,
    make_tiny_ssl_model,
    ssl_frame_lengths,
)
from speechbrain_nes2net.pretrained.export import write_export
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import (
    AntiSpoofEncoder,
    AntiSpoofHead,
    AudioNormalizer,
    EvalSettings,
    prepare_waveforms,
)
from speechbrain_nes2net.training.dataio import audio_pipeline

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


def backend_kwargs(**kwargs):
    """Keyword arguments of a tiny Nes2Net-X back-end."""
    return {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4, **kwargs}


def random_modules(folder, backend, seed):
    """A tiny SSL model, random aggregation and back-end (``backend``: its arguments), eval mode."""
    torch.manual_seed(seed)
    ssl = SSLFrontend(make_tiny_ssl_model(folder / "tiny_wavlm")).eval()
    aggregator = build_aggregator("SEA", 3, 64).eval()
    backend_module = Nes2NetX(**backend).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for name, tensor in backend_module.state_dict().items():
            if "running_var" in name:
                tensor.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                tensor.uniform_(-0.2, 0.2)
    return ssl, aggregator, backend_module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Live modules and their export (short windows so that tests stay fast)."""
    folder = tmp_path_factory.mktemp("tiny")
    modules = random_modules(folder, backend_kwargs(), seed=0)
    settings = EvalSettings(
        eval_min_samples=8000,
        eval_window_seconds=1.4,
        window_seconds=1.0,
        window_hop_seconds=0.5,
    )
    export = write_export(
        folder / "export", *modules, backend_kwargs(), settings=settings
    )
    model = AntiSpoofModel.from_hparams(source=str(export), savedir=str(folder / "savedir"))
    clf = EncoderClassifier.from_hparams(source=str(export), savedir=str(folder / "clf"))
    reference = AntiSpoofEncoder(*modules, min_samples=8000).eval()
    return {
        "modules": modules,
        "export": export,
        "model": model,
        "clf": clf,
        "reference": reference,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Speech-like files at several rates and channel counts."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(7)
    files = {}
    for name, rate, seconds, channels in [
        ("mono16k.flac", 16000, 1.2, 1),
        ("tel8k.wav", 8000, 1.0, 1),
        ("stereo44k.wav", 44100, 0.9, 2),
        ("short.flac", 16000, 0.3, 1),
        ("long.wav", 16000, 3.3, 1),
        ("tail.wav", 16000, 3.0, 1),
    ]:
        signal = speech_like(rng, seconds, rate).astype(np.float32)
        if channels == 2:
            signal = np.stack([signal, 0.5 * speech_like(rng, seconds, rate)], axis=1).astype(
                np.float32
            )
        sf.write(folder / name, signal, rate)
        files[name] = folder / name
    return files


def recipe_sig(path, **options):
    """The waveform the recipe's evaluation pipeline gives (its first output, ``sig``)."""
    return audio_pipeline(**options)(str(path))


def reference_score(tiny, wav):
    """The live modules on one 16 kHz waveform."""
    with torch.no_grad():
        return float(AntiSpoofHead(tiny["modules"][2]).logits(tiny["reference"](wav[None]))[0, -1])


def test_audio_normalizer_gives_the_one_audio_path(audio):
    # What Pretrained.load_audio hands the normalizer: soundfile data, (samples, channels).
    for name in ("stereo44k.wav", "tel8k.wav", "mono16k.flac"):
        signal, rate = audio_io.load(str(audio[name]), channels_first=False)
        assert torch.equal(AudioNormalizer(RATE)(signal, rate), load_audio(audio[name], RATE)), name


def test_prepare_waveforms_matches_the_recipe_pipeline(audio):
    wavs = [load_audio(audio[name]) for name in ("short.flac", "mono16k.flac")]
    batch = torch.zeros(2, len(wavs[1]))
    batch[0, : len(wavs[0])] = wavs[0]
    batch[1] = wavs[1]
    lengths = torch.tensor([len(wavs[0]) / len(wavs[1]), 1.0])
    for num_samples, min_samples in ((None, 8000), (12000, 0)):
        prepared, new_lengths = prepare_waveforms(batch, lengths, num_samples, min_samples)
        for row, name in enumerate(("short.flac", "mono16k.flac")):
            expected = recipe_sig(audio[name], num_samples=num_samples, min_samples=min_samples)
            count = round(float(new_lengths[row]) * prepared.shape[1])
            assert torch.equal(prepared[row, :count], expected)


def test_scores_files_at_any_rate_and_channel_count(tiny, audio):
    model = tiny["model"]
    for name in ("mono16k.flac", "tel8k.wav", "stereo44k.wav", "short.flac"):
        expected = reference_score(tiny, load_audio(audio[name]))
        assert model.score_file(audio[name]) == pytest.approx(expected, abs=1e-5), name
    # Tensors in: stereo at 44.1 kHz (down-sampled) and telephone audio at
    # 8 kHz (up-sampled), resampled and downmixed like a file.
    for name in ("stereo44k.wav", "tel8k.wav"):
        waveform, rate = audio_io.load(str(audio[name]), channels_first=False)
        got = model.score_batch(waveform[None], sample_rate=rate)
        assert got.tolist() == pytest.approx([model.score_file(audio[name])], abs=1e-4), name


def test_padded_batches_score_each_waveform_as_alone(tiny, audio):
    model = tiny["model"]
    wavs = [load_audio(audio[name]) for name in ("mono16k.flac", "tel8k.wav", "short.flac")]
    longest = max(len(wav) for wav in wavs)
    batch = torch.stack([torch.nn.functional.pad(wav, (0, longest - len(wav))) for wav in wavs])
    lengths = torch.tensor([len(wav) / longest for wav in wavs])
    alone = [float(model.score_batch(wav[None])[0]) for wav in wavs]
    assert model.score_batch(batch, lengths).tolist() == pytest.approx(alone, abs=1e-5)
    # The same through stock SpeechBrain's EncoderClassifier.
    out_prob, _, index, labels = tiny["clf"].classify_batch(batch, lengths)
    log_odds = (out_prob[:, 1] - out_prob[:, 0]).tolist()
    assert log_odds == pytest.approx(alone, abs=1e-5)  # one logit: log-odds = score
    assert labels == ["bonafide" if odds > 0 else "spoof" for odds in log_odds]
    assert index.tolist() == [int(odds > 0) for odds in log_odds]


def test_frame_lengths_are_exact_where_rounding_is_not(tiny):
    ssl = tiny["modules"][0]
    # 26901 and 26663 samples give 83 frames each; rounding 26663 / 26901 * 83 gives 82.
    lengths = torch.tensor([1.0, 26663 / 26901])
    frames = ssl_frame_lengths(ssl, lengths, 26901, 83)
    assert frame_mask(lengths, 83).sum(dim=1).tolist() == [83, 82]
    assert frame_mask(frames, 83).sum(dim=1).tolist() == [83, 83]
    counts = ssl.ssl.model._get_feat_extract_output_lengths(torch.tensor([26901, 26663]))
    assert counts.tolist() == [83, 83]


def test_windows_cover_the_recording_and_average(tiny, audio):
    model = tiny["model"]
    wav = load_audio(audio["long.wav"])
    windows = model.score_windows(audio["long.wav"])
    assert windows.starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.3])
    assert windows.ends[-1] == pytest.approx(len(wav) / RATE)
    for start, end, score in zip(windows.starts, windows.ends, windows.scores):
        segment = wav[round(start * RATE) : round(end * RATE)]
        assert score == pytest.approx(reference_score(tiny, segment), abs=1e-5)
    assert windows.score == pytest.approx(np.mean(windows.scores), abs=1e-6)
    # A recording shorter than a window is one window, scored as a file.
    short = model.score_windows(audio["short.flac"])
    assert short.starts == [0.0] and short.score == pytest.approx(
        model.score_file(audio["short.flac"]), abs=1e-6
    )
    with pytest.raises(ValueError, match="positive"):
        model.score_windows(audio["long.wav"], hop_seconds=0)


@pytest.mark.parametrize(
    "name, bounds",
    [
        ("long.wav", [(0, 22400), (22400, 44800), (44800, 52800)]),
        ("tail.wav", [(0, 22400), (22400, 48000)]),  # a 3200-sample tail joins its neighbour
    ],
)
def test_long_files_are_scored_by_windows_like_the_recipe(tiny, audio, name, bounds):
    # eval_window_seconds 1.4 s: consecutive 22400-sample windows, mean of their logits.
    wav = load_audio(audio[name])
    assert len(wav) == bounds[-1][1]
    expected = [reference_score(tiny, wav[start:end]) for start, end in bounds]
    result = tiny["model"].score_files([audio[name]])[0]
    assert result.score == pytest.approx(np.mean(expected), abs=1e-5)
    assert result.windows.scores == pytest.approx(expected, abs=1e-5)
    assert result.windows.ends == pytest.approx([end / RATE for _, end in bounds])
    assert tiny["model"].score_file(audio[name]) == pytest.approx(result.score, abs=1e-6)
    # Stock SpeechBrain scores long files the same way (one-logit model: log-odds = score).
    out_prob = tiny["clf"].classify_file(str(audio[name]))[0]
    assert float(out_prob[0, 1] - out_prob[0, 0]) == pytest.approx(result.score, abs=1e-5)


def test_frame_scores_decompose_the_utterance_score(tiny, audio):
    model = tiny["model"]
    frames = model.frame_scores(audio["mono16k.flac"])
    n_samples = len(load_audio(audio["mono16k.flac"]))
    expected_frames = int(tiny["modules"][0].ssl.model._get_feat_extract_output_lengths(n_samples))
    assert len(frames.scores) == len(frames.times) == expected_frames
    assert frames.frame_shift == pytest.approx(0.02)
    assert np.mean(frames.scores) == pytest.approx(frames.score, abs=1e-5)
    assert frames.score == pytest.approx(model.score_file(audio["mono16k.flac"]), abs=1e-6)
    assert np.std(frames.scores) > 0


def test_calibration_crop_and_attentive_pooling(tiny, audio, tmp_path):
    ssl, aggregator, _ = tiny["modules"]
    astp = backend_kwargs(pooling="ASTP", n_out=2)
    backend = Nes2NetX(**astp).eval()
    settings = EvalSettings(eval_samples=12000)
    export = write_export(
        tmp_path / "cal",
        ssl,
        aggregator,
        backend,
        astp,
        settings=settings,
        decision=DecisionRule.from_calibration(ScoreCalibration(scale=2.0, offset=-0.5, prior=0.2)),
    )
    model = AntiSpoofModel.from_hparams(source=str(export))
    for name in ("mono16k.flac", "short.flac"):
        raw = model.score_file(audio[name], calibrated=False)
        assert model.score_file(audio[name]) == pytest.approx(2.0 * raw - 0.5, abs=1e-5)
        # The first 12000 samples, repeat-padded: the recipe's fixed-length evaluation.
        sig = recipe_sig(audio[name], num_samples=12000)
        with torch.no_grad():
            encoder = AntiSpoofEncoder(ssl, aggregator, backend).eval()
            expected = AntiSpoofHead(backend).logits(encoder(sig[None]))[0, 1]
        assert raw == pytest.approx(float(expected), abs=1e-5)
    # Two logits and attentive pooling: no frame decomposition, windows instead.
    with pytest.raises(NotImplementedError, match="score_windows"):
        model.frame_scores(audio["mono16k.flac"])
    assert len(model.score_windows(audio["long.wav"]).scores) > 1


CLASSIFY = textwrap.dedent(
    """
    import json, sys
    from speechbrain.inference.classifiers import EncoderClassifier
    clf = EncoderClassifier.from_hparams(source=sys.argv[1], savedir=sys.argv[2])
    print(json.dumps([clf.classify_file(path)[3][0] for path in sys.argv[3:]]))
    """
)


def test_exported_labels_follow_the_calibrated_threshold_not_logit_0(tiny, audio, tmp_path):
    # Development scores whose EER threshold is far below 0 (-1.2): a model that
    # decided at logit 0 would call much of the bona fide speech spoof.
    rng = np.random.default_rng(0)
    decision = decision_from_dev(rng.normal(-0.2, 1.0, 400), rng.normal(-2.2, 1.0, 400))
    assert decision.source == "calibration" and -1.4 < decision.threshold < -1.0
    ssl, aggregator, trained = tiny["modules"]
    backend = Nes2NetX(**backend_kwargs()).eval()
    backend.load_state_dict(trained.state_dict())
    names = ["mono16k.flac", "tel8k.wav", "stereo44k.wav", "short.flac"]
    with torch.no_grad():  # raw scores near -0.7: between the threshold and 0
        backend.fc.weight.mul_(0.01)
        backend.fc.bias.fill_(-0.7)
    export = write_export(
        tmp_path / "decided", ssl, aggregator, backend, backend_kwargs(),
        settings=EvalSettings(eval_min_samples=8000), decision=decision,
    )
    model = AntiSpoofModel.from_hparams(source=str(export), savedir=str(tmp_path / "sd"))
    results = model.score_files([audio[name] for name in names])
    raw = np.array([model.score_file(audio[name], calibrated=False) for name in names])
    assert ((raw > decision.threshold) & (raw < 0)).all(), raw  # the rules disagree here
    assert [r.label for r in results] == ["bonafide"] * len(names)  # calibrated LLR >= 0
    assert [r.score for r in results] == pytest.approx(list(decision.calibration.apply(raw)), abs=1e-5)
    # Stock SpeechBrain in a fresh process: the same labels.
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    labels = subprocess.run(
        [sys.executable, "-c", CLASSIFY, str(export), str(tmp_path / "clf")]
        + [str(audio[name]) for name in names],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()[-1]
    assert json.loads(labels) == ["bonafide"] * len(names)
    # The model card says where the threshold is and why.
    card = (export / "README.md").read_text()
    assert f"raw score is >= {decision.threshold:.6g}" in card and "Bayes decision" in card


def test_score_files_reports_bad_files_and_scores_the_rest(tiny, audio, tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0,), dtype=np.float32), RATE)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(4000, np.nan, dtype=np.float32), RATE, subtype="FLOAT")
    paths = [
        audio["mono16k.flac"],
        empty,
        audio["tel8k.wav"],
        corrupt,
        tmp_path / "missing.wav",
        audio["long.wav"],
        nan,
        audio["short.flac"],
    ]
    ticks = []
    results = tiny["model"].score_files(paths, batch_size=2, progress=ticks.append)
    assert sum(ticks) == len(paths)
    assert [result.ok for result in results] == [True, False, True, False, False, True, False, True]
    assert "no samples" in results[1].error
    assert "not a readable audio file" in results[3].error
    assert "NaN" in results[6].error
    for path, result in zip(paths, results):
        assert result.path == str(path)
        if result.ok:
            assert result.score == pytest.approx(tiny["model"].score_file(path), abs=1e-5)
            assert result.label in ("bonafide", "spoof")
    assert results[5].windows is not None and len(results[5].windows.scores) == 3
    assert all(
        result.windows is None for result in results if result.ok and result is not results[5]
    )



def test_a_file_that_fails_to_load_inside_a_batch_shifts_no_score(tiny, audio, tmp_path):
    # The NaN file passes the header read (so it is planned into a batch) and fails on
    # loading: the files after it in the batch must keep their own scores.
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(4000, np.nan, dtype=np.float32), RATE, subtype="FLOAT")
    paths = [nan, audio["mono16k.flac"], audio["tel8k.wav"], audio["short.flac"]]
    model = tiny["model"]
    alone = [model.score_file(path) for path in paths[1:]]
    assert len(set(np.round(alone, 6))) == 3  # distinct scores: a shift would show
    results = model.score_batch_files(paths, batch_size=4)
    assert [result.ok for result in results] == [False, True, True, True]
    assert "NaN" in results[0].error
    for path, result, expected in zip(paths[1:], results[1:], alone):
        assert result.path == str(path)
        assert result.score == pytest.approx(expected, abs=1e-5)

def test_foreign_class_loads_the_interface(tiny, audio, tmp_path):
    model = foreign_class(
        source=str(tiny["export"]),
        pymodule_file="custom_interface.py",
        classname="AntiSpoofModel",
        savedir=str(tmp_path),
    )
    assert type(model).__name__ == "AntiSpoofModel"
    assert model.score_file(audio["tel8k.wav"]) == pytest.approx(
        tiny["model"].score_file(audio["tel8k.wav"]), abs=1e-6
    )


FROZEN = textwrap.dedent(
    """
    import sys
    from speechbrain.inference.classifiers import EncoderClassifier
    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
    model = AntiSpoofModel.from_hparams(source=sys.argv[1], savedir=sys.argv[2])
    clf = EncoderClassifier.from_hparams(source=sys.argv[1], savedir=sys.argv[2])
    out_prob = clf.classify_file(sys.argv[3])[0]
    print(model.score_file(sys.argv[3]), float(out_prob[0, 1] - out_prob[0, 0]))
    """
)


def test_frozen_ssl_is_referenced_by_hub_id(tiny, audio, tmp_path):
    # A hub cache holding the SSL model, as after a first download.
    snapshot = tmp_path / "hub" / "models--demo--tiny-wavlm" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    source = tiny["folder"] / "tiny_wavlm"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((source / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    ssl, aggregator, backend = tiny["modules"]
    export = write_export(
        tmp_path / "frozen",
        ssl,
        aggregator,
        backend,
        backend_kwargs(),
        settings=EvalSettings(eval_min_samples=8000),
        ssl_hub_id="demo/tiny-wavlm",
        verify=False,  # the hub cache is set up for the process below
    )
    assert not (export / "ssl.ckpt").exists()
    assert 'source: "demo/tiny-wavlm"' in (export / "hyperparams.yaml").read_text()
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), OMP_NUM_THREADS="1"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FROZEN,
            str(export),
            str(tmp_path / "sd"),
            str(audio["mono16k.flac"]),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ours, log_odds = map(float, result.stdout.split()[-2:])
    expected = tiny["model"].score_file(audio["mono16k.flac"])
    assert ours == pytest.approx(expected, abs=1e-5) and log_odds == pytest.approx(
        expected, abs=1e-5
    )
