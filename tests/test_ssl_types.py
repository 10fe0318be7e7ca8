"""Any SSL front-end SpeechBrain wraps: WavLM, wav2vec 2.0 / XLS-R, HuBERT, data2vec audio."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_nes2net.lobes.ssl import (
    SSL_TYPES,
    SSLFrontend,
    make_tiny_ssl_model,
    ssl_dim,
    ssl_num_states,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model_type", SSL_TYPES)
def test_every_type_gives_all_states_in_the_official_layout(model_type, tmp_path):
    folder = make_tiny_ssl_model(tmp_path / "m", model_type=model_type, hidden_size=48, num_layers=3)
    frontend = SSLFrontend(folder).eval()
    model = frontend.ssl.model
    assert model.config.model_type == model_type
    wavs = torch.randn(2, 12000)
    with torch.no_grad():
        states = frontend(wavs)
        hidden = model(frontend_input(frontend, wavs), output_hidden_states=True)
    assert states.shape[:2] == (ssl_num_states(folder), 2) == (4, 2) and states.shape[-1] == ssl_dim(folder) == 48
    # The last state is the encoder's output after its final LayerNorm (the
    # official "last layer"), the others are the inputs of the layers.
    assert torch.allclose(states[-1], hidden.last_hidden_state, atol=1e-5)
    for layer in range(3):
        assert torch.allclose(states[layer], hidden.hidden_states[layer], atol=1e-5)


def frontend_input(frontend, wavs):
    """The waveforms as the front-end hands them to the model (normalised when it says so)."""
    from speechbrain_nes2net.lobes.ssl import normalize_waveforms

    return normalize_waveforms(wavs) if frontend.normalize else wavs


@pytest.mark.slow
@pytest.mark.parametrize("model_type", [t for t in SSL_TYPES if t != "wavlm"])  # the demo's own
def test_the_demo_recipe_trains_on_each_type(model_type, tmp_path):
    folder = make_tiny_ssl_model(tmp_path / "ssl", model_type=model_type)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "recipes/train.py", "hparams/demo.yaml", f"--output_folder={tmp_path / 'run'}",
         f"--ssl_source={folder}", "--number_of_epochs=1", "--n_train=12", "--n_dev=6", "--n_test=6",
         "--noprogressbar"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().splitlines()[-1].startswith("demo_test: EER")


def recipe_body(path):
    """A YAML's lines after its header comment, without comments and blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split(" #")[0].rstrip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_hubert_recipe_is_the_ctrsvdd_recipe_with_another_front_end():
    # An example of another front-end is only worth having while it trains as
    # the official recipe does: nothing but the SSL model may differ.
    ctrsvdd = recipe_body(ROOT / "hparams" / "nes2net_x_ctrsvdd.yaml")
    hubert = recipe_body(ROOT / "hparams" / "nes2net_x_hubert_ctrsvdd.yaml")
    changed = [(a, b) for a, b in zip(ctrsvdd, hubert) if a != b]
    assert len(ctrsvdd) == len(hubert)
    assert changed == [
        ("output_folder: !ref results/nes2net_x_ctrsvdd/<seed>",
         "output_folder: !ref results/nes2net_x_hubert_ctrsvdd/<seed>"),
        ("ssl_source: microsoft/wavlm-large", "ssl_source: facebook/hubert-large-ll60k"),
    ]
