"""Per-utterance augmentation sees the whole utterance, then the cut (as the releases)."""

import numpy as np
import soundfile as sf
import torch

from speechbrain_nes2net.training.dataio import audio_pipeline


def test_augmentation_sees_the_whole_utterance_before_the_cut(tmp_path):
    # The releases augment the whole file, then keep its start (ASVspoof 2019:
    # process_Rawboost_feature, then pad to 64,600 samples); an augmentation that
    # normalises by the peak must see the loud end of the file.
    wav = np.concatenate([np.full(8000, 0.1), np.full(8000, 0.8)]).astype(np.float32)
    path = tmp_path / "u.wav"
    sf.write(path, wav, 16000)

    def peak_normalise(sig):
        """RawBoost-like normalisation by the utterance's peak."""
        return sig / sig.abs().max()

    pipeline = audio_pipeline(num_samples=4000, augment=peak_normalise)
    sig, error = pipeline.func(str(path))
    assert error == "" and sig.shape == (4000,)
    assert torch.allclose(sig, torch.full((4000,), 0.125), atol=1e-4)  # 0.1 / 0.8, not 0.1 / 0.1
