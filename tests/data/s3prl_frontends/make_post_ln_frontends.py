"""Writes post_ln_frontends_tiny.pt: s3prl's WavLM and wav2vec 2.0 in post-LayerNorm layouts.

An independent reference for the front-end import of
``speechbrain_nes2net.official.frontend`` in the layouts of WavLM Base and
wav2vec 2.0 Base (``layer_norm_first=False``: no final encoder LayerNorm; both
feature-encoder modes). The states come from s3prl's own model code and its
upstream experts (their hooks: the input of every transformer layer, then the
encoder output), not from transformers or this package. See README.md.

Run once, with s3prl 0.4.15 on the path (its model files need only torch and
numpy; its experts also import torchaudio, requests, filelock and tqdm)::

    pip install --no-deps --target /tmp/s3prl s3prl==0.4.15
    PYTHONPATH=/tmp/s3prl python tests/data/s3prl_frontends/make_post_ln_frontends.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import s3prl
import torch
from s3prl.upstream.wav2vec2.expert import UpstreamExpert as Wav2Vec2Expert
from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model
from s3prl.upstream.wavlm.expert import UpstreamExpert as WavLMExpert
from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

OUT = Path(__file__).resolve().parent / "post_ln_frontends_tiny.pt"
TINY = {
    "encoder_layers": 2,
    "encoder_embed_dim": 16,
    "encoder_ffn_embed_dim": 32,
    "encoder_attention_heads": 2,
    "conv_feature_layers": "[(8, 10, 5)] + [(8, 3, 2)]",
    "conv_pos": 4,
    "conv_pos_groups": 2,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "normalize": False,
    "layer_norm_first": False,
}
WAVLM_ONLY = {
    "relative_position_embedding": True,
    "gru_rel_pos": True,
    "num_buckets": 16,
    "max_distance": 40,
}
EXTRACTOR_MODES = ("default", "layer_norm")


def perturbed(model, seed):
    """``model`` with every parameter moved off its initial value (LayerNorms too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def states(expert, wav):
    """The expert's hidden states of one waveform: (layers + 1, frames, dim)."""
    with torch.no_grad():
        return torch.stack(expert([wav])["hidden_states"])[:, 0]


def case(model_name, extractor_mode, seed, inputs, folder):
    """One layout: s3prl model with random weights, run through its expert."""
    config = dict(TINY, extractor_mode=extractor_mode)
    torch.manual_seed(seed)
    checkpoint = folder / f"{model_name}_{extractor_mode}.pt"
    if model_name == "s3prl_wavlm":
        config.update(WAVLM_ONLY)
        model = perturbed(WavLM(WavLMConfig(config)), seed + 100)
        torch.save({"cfg": config, "model": model.state_dict()}, checkpoint)
        expert, prefix = WavLMExpert(str(checkpoint)), "ssl_model.model.model."
    else:
        fields = Wav2Vec2Config.__dataclass_fields__
        model = perturbed(
            Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in config.items() if k in fields})),
            seed + 100,
        )
        torch.save(
            {
                "task_cfg": {"normalize": False},
                "model_cfg": config,
                "model_weight": model.state_dict(),
            },
            checkpoint,
        )
        expert, prefix = Wav2Vec2Expert(str(checkpoint)), "ssl_model.model."
    expert.eval()
    return {
        "model_name": model_name,
        "config": config,
        "seed": seed,
        "state_dict": {prefix + k: v.clone() for k, v in expert.model.state_dict().items()},
        "output": [states(expert, wav) for wav in inputs],
    }


def main():
    """Writes the fixture file."""
    generator = torch.Generator().manual_seed(2026)
    inputs = [0.1 * torch.randn(n, generator=generator) for n in (1600, 1120)]
    with tempfile.TemporaryDirectory() as folder:
        cases = [
            case(model_name, mode, seed, inputs, Path(folder))
            for seed, (model_name, mode) in enumerate(
                ((m, e) for m in ("s3prl_wavlm", "fairseq_wav2vec2") for e in EXTRACTOR_MODES), 31
            )
        ]
    torch.save(
        {
            "about": "s3prl 0.4.15 WavLM and wav2vec 2.0 (its copy of fairseq's Wav2Vec2Model), "
            "post-LayerNorm, tiny random weights; see tests/data/README.md",
            "versions": {
                "s3prl": s3prl.__version__,
                "torch": torch.__version__.split("+")[0],
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            },
            "input": inputs,
            "output_layout": "per waveform (layers + 1, frames, dim), each waveform run alone",
            "cases": cases,
        },
        OUT,
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
