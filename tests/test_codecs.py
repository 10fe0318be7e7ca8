"""Codec and channel conditions with the real encoders: what each does to speech, length,
alignment, bitrate, seeding, workers, and the errors a user sees."""

import sys

import numpy as np
import pytest
import torch

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.codecs import (
    CODECS_EXTRA,
    CONDITIONS,
    ChannelAugment,
    CodecError,
    apply_condition,
    resolve_conditions,
)

RATE = 16000


@pytest.fixture(scope="module")
def speech():
    """2 s of the demo's bona fide speech with fricative-like noise (about 20 dB down,
    so that there is energy up to 8 kHz to lose), plus 123 samples: no whole number of frames."""
    rng = np.random.default_rng(0)
    x = speech_like(rng, 2.0)
    x = np.concatenate([x, x[:123]]) * 0.5 / np.abs(x).max()
    return torch.from_numpy((x + rng.normal(0, 0.01, len(x))).astype(np.float32))


def lag(x, y, span=400):
    """The shift of ``y`` against ``x`` (samples, positive: ``y`` late) at the correlation peak."""
    n = len(x)
    corr = np.fft.irfft(np.fft.rfft(y, 2 * n) * np.conj(np.fft.rfft(x, 2 * n)))
    return int(np.argmax(np.concatenate([corr[-span:], corr[: span + 1]]))) - span


def band_share(y, x, low, high, rate=RATE):
    """Energy of ``y`` between ``low`` and ``high`` Hz, as a share of the input's there."""
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = (freqs >= low) & (freqs < high)
    return (np.abs(np.fft.rfft(y))[band] ** 2).sum() / (np.abs(np.fft.rfft(x))[band] ** 2).sum()


def snr_db(y, x):
    return 10 * np.log10((x**2).sum() / ((x - y) ** 2).sum())


@pytest.fixture(scope="module")
def coded(speech):
    return {name: apply_condition(speech, name, RATE).numpy() for name in CONDITIONS}


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_condition_keeps_length_and_alignment_within_a_millisecond(name, speech, coded):
    x, y = speech.numpy(), coded[name]
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert abs(lag(x, y)) <= RATE // 1000, f"{name}: {lag(x, y)} samples late"
    assert not np.array_equal(x, y), f"{name} left the audio as it was"
    assert np.corrcoef(x, y)[0, 1] > 0.5  # still the same speech


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_codec_is_deterministic(name, speech, coded):
    assert np.array_equal(apply_condition(speech, name, RATE).numpy(), coded[name])


#: Encoded bitrates (kbps) of the codecs that have one, as their condition names say.
BITRATES = {
    "mp3_8k": 8, "mp3_16k": 16, "mp3_32k": 32, "mp3_64k": 64, "mp3_128k": 128,
    "aac_32k": 32, "opus_nb_12k": 12, "opus_wb_16k": 16, "amr_nb_12k2": 12.2, "g722": 64,
    "g711_mulaw": 64, "g711_alaw": 64,
}  # fmt: skip


@pytest.mark.parametrize("name, kbps", BITRATES.items())
def test_codecs_run_at_their_bitrate(name, kbps, speech):
    condition = CONDITIONS[name]
    x = speech.numpy() if condition.rate == RATE else speech.numpy()[::2]
    _, n_bytes = condition.code(x, condition.rate, np.random.default_rng(0))
    measured = n_bytes * 8 / (len(x) / condition.rate) / 1000
    # Headers add a little; Opus (variable bitrate only, in libsndfile) overshoots on noise.
    high = 1.35 if name.startswith("opus") else 1.1
    assert kbps * 0.8 <= measured <= kbps * high, f"{name}: {measured:.1f} kbps"


def test_each_codec_changes_speech_the_way_it_should(speech, coded):
    x = speech.numpy()
    share = {name: band_share(y, x, 4000, 8001) for name, y in coded.items()}
    # MP3 at 8 kbps keeps nothing above about 4 kHz; at 128 kbps most of it, and less noise.
    assert share["mp3_8k"] < 0.01 and share["mp3_128k"] > 0.5
    assert snr_db(coded["mp3_8k"], x) + 5 < snr_db(coded["mp3_128k"], x)
    # Narrow-band codecs (8 kHz) end at 4 kHz; wide-band ones (16 kHz) go on.
    for name in ("opus_nb_12k", "amr_nb_12k2", "g711_mulaw", "g711_alaw"):
        assert share[name] < 0.01, name
    for name in ("opus_wb_16k", "g722", "aac_32k"):
        assert share[name] > 0.5, name
    # The telephone band: nothing below 300 Hz or above 3.4 kHz, speech in between.
    telephone = coded["telephone"]
    assert band_share(telephone, x, 0, 300) < 0.01 and band_share(telephone, x, 3400, 8001) < 0.01
    assert band_share(telephone, x, 500, 3000) > 0.8


def test_g711_quantises_to_its_256_levels(speech):
    x = speech.numpy()[::2]
    for name in ("g711_mulaw", "g711_alaw"):
        y, _ = CONDITIONS[name].code(x, 8000, None)
        assert len(np.unique(y)) <= 256 < len(np.unique(x)), name
        assert 25 < snr_db(y, x) < 45, name  # 8-bit companding: ~38 dB on speech
    mulaw, _ = CONDITIONS["g711_mulaw"].code(x, 8000, None)
    alaw, _ = CONDITIONS["g711_alaw"].code(x, 8000, None)
    assert not np.array_equal(mulaw, alaw)


def test_packet_loss_drops_whole_packets_and_conceals_them(speech, coded):
    x, size = speech.numpy(), RATE // 50
    packets = -(-len(x) // size)
    zero, repeat = coded["packet_loss_zero"], coded["packet_loss_repeat"]
    parts = [slice(i * size, (i + 1) * size) for i in range(packets)]
    lost = [i for i, part in enumerate(parts) if not np.array_equal(zero[part], x[part])]
    assert 0.03 * packets <= len(lost) <= 0.2 * packets  # 10% of the packets
    for i, part in enumerate(parts):
        if i in lost:
            assert not zero[part].any()
        else:
            assert np.array_equal(zero[part], x[part])
    # The same losses (seeded by the audio), concealed by repeating the previous packet.
    for i in lost:
        previous = repeat[parts[i].start - size : parts[i].start]
        assert np.array_equal(repeat[parts[i]], previous[: len(repeat[parts[i]])])


def test_the_same_seed_gives_the_same_coded_audio(speech):
    batch = torch.stack([speech, speech.flip(0)])
    conditions = ["packet_loss_zero", "packet_loss_repeat", "mp3_16k", "amr_nb_12k2"]
    first = ChannelAugment(conditions, prob=1.0, seed=7)(batch)
    again = ChannelAugment(conditions, prob=1.0, seed=7)(batch)
    other = ChannelAugment(conditions, prob=1.0, seed=8)(batch)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], batch[0]) and not torch.equal(first[1], batch[1])
    # Unseeded, it draws from torch's RNG (SpeechBrain's seed_everything).
    torch.manual_seed(3)
    one = ChannelAugment(conditions)(batch)
    torch.manual_seed(3)
    assert torch.equal(one, ChannelAugment(conditions)(batch))


def test_prob_codes_that_share_of_utterances(speech):
    batch = speech[:4000].repeat(40, 1)
    coded = ChannelAugment(["g711_alaw"], prob=0.5, seed=0)(batch)
    changed = sum(not torch.equal(row, speech[:4000]) for row in coded)
    assert 10 <= changed <= 30
    assert torch.equal(ChannelAugment(["g711_alaw"], prob=0.0, seed=0)(batch), batch)


class CodedDataset(torch.utils.data.Dataset):
    """Utterances coded in the DataLoader workers, as the recipes' data pipeline does."""

    def __init__(self, speech):
        self.speech = speech
        self.augment = ChannelAugment(["packet_loss_zero", "g722", "mp3_32k", "aac_32k"])

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return self.augment(self.speech[: 8000 + 100 * index])[:8000]


@pytest.mark.parametrize("start", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_codecs_run_in_dataloader_workers_reproducibly(speech, start):
    def run():
        torch.manual_seed(11)
        loader = torch.utils.data.DataLoader(
            CodedDataset(speech), batch_size=2, num_workers=2, multiprocessing_context=start
        )
        return torch.cat(list(loader))

    first = run()
    assert first.shape == (6, 8000) and torch.isfinite(first).all()
    assert torch.equal(first, run())


def test_unknown_conditions_are_refused_with_the_known_ones_listed():
    with pytest.raises(CodecError) as error:
        resolve_conditions("mp3_32k,mp3_31k")
    assert "mp3_31k" in str(error.value) and all(name in str(error.value) for name in CONDITIONS)
    with pytest.raises(CodecError):
        ChannelAugment(["gsm"])


def test_without_pyav_its_conditions_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(ImportError) as error:
        ChannelAugment(["mp3_32k", "aac_32k", "g722"])
    assert "aac_32k, g722" in str(error.value) and CODECS_EXTRA in str(error.value)
    assert resolve_conditions(["mp3_32k", "telephone"]) == ["mp3_32k", "telephone"]


def test_audio_a_codec_cannot_take_raises_a_codec_error_and_training_leaves_it_uncoded():
    short = torch.full((40,), 0.1)  # 2.5 ms: shorter than the telephone filter's edge padding
    with pytest.raises(CodecError, match="telephone cannot code these 0.003 s of audio"):
        apply_condition(short, "telephone", RATE)
    assert torch.equal(ChannelAugment(["telephone"], seed=0)(short), short)
