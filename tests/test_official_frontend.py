"""Official Nes2Net SSL front-ends (s3prl WavLM, fairseq XLS-R) on SpeechBrain HF lobes."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from speechbrain.integrations.huggingface.wavlm import WavLM

from speechbrain_nes2net.official.frontend import (
    MODEL_NAMES,
    OFFICIAL_PREFIXES,
    OfficialWeightsError,
    frontend_from_official,
    hf_config_from_official,
    hf_state_dict_from_official,
    official_state_dict_from_hf,
    parse_conv_feature_layers,
)

FIXTURES = Path(__file__).resolve().parent / "data" / "official_nes2net"
POST_LN = Path(__file__).resolve().parent / "data" / "s3prl_frontends" / "post_ln_frontends_tiny.pt"
WAVLM = "ctrsvdd_s3prl_wavlm_frontend_tiny.pt"
XLSR = "asvspoof_fairseq_xlsr_frontend_tiny.pt"
TOL = 1e-4


def load(name):
    return torch.load(FIXTURES / name, weights_only=True)


@pytest.fixture(scope="module", params=[WAVLM, XLSR])
def reference(request):
    """The fixture and the front-end imported from it."""
    ref = load(request.param)
    frontend = frontend_from_official(ref["model_name"], ref["config"], ref["state_dict"])
    return ref, frontend


def official_states(ref, states):
    """Returns the part of our (layers + 1, frames, dim) states that the fixture holds."""
    # fairseq: only the last layer (after the final LayerNorm) is stored.
    return states if ref["model_name"] == "s3prl_wavlm" else states[-1]


def test_each_waveform_matches_official(reference):
    ref, frontend = reference
    layers = ref["config"]["encoder_layers"]
    with torch.no_grad():
        for wav, expected in zip(ref["input"], ref["output"]):
            states = frontend(wav.unsqueeze(0))
            assert states.shape == (
                layers + 1,
                1,
                expected.shape[-2],
                ref["config"]["encoder_embed_dim"],
            )
            torch.testing.assert_close(
                official_states(ref, states[:, 0]), expected, atol=TOL, rtol=0
            )


def test_padded_batch_matches_official(reference):
    ref, frontend = reference
    wavs = ref["input"]
    longest = max(len(wav) for wav in wavs)
    batch = torch.stack([F.pad(wav, (0, longest - len(wav))) for wav in wavs])
    wav_lens = torch.tensor([len(wav) / longest for wav in wavs])
    assert wav_lens.min() < 1, "the fixture should have waveforms of different lengths"
    with torch.no_grad():
        states = frontend(batch, wav_lens)
    for index, expected in enumerate(ref["output"]):
        frames = expected.shape[-2]
        torch.testing.assert_close(
            official_states(ref, states[:, index, :frames]), expected, atol=TOL, rtol=0
        )


def test_final_state_is_after_encoder_layer_norm():
    # transformers 5 records the last layer before the final LayerNorm: the
    # front-end must not hand that over (it differs from the official state).
    ref = load(WAVLM)
    frontend = frontend_from_official(ref["model_name"], ref["config"], ref["state_dict"])
    with torch.no_grad():
        raw = frontend.ssl.model(
            F.layer_norm(ref["input"][0], ref["input"][0].shape)[None], output_hidden_states=True
        )
    assert (raw.hidden_states[-1][0] - ref["output"][0][-1]).abs().max() > 0.1
    torch.testing.assert_close(raw.last_hidden_state[0], ref["output"][0][-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("name, do_normalize", [(WAVLM, True), (XLSR, False)])
def test_saved_folder_loads_in_speechbrain_lobe(tmp_path, name, do_normalize):
    ref = load(name)
    frontend_from_official(ref["model_name"], ref["config"], ref["state_dict"], save_path=tmp_path)
    preprocessor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert preprocessor["do_normalize"] is do_normalize
    assert json.loads((tmp_path / "config.json").read_text())["layerdrop"] == 0.0
    if name == WAVLM:
        # The plain lobe (its own waveform normalisation) gives the official
        # transformer-layer inputs; only the final LayerNorm is left to us.
        lobe = WavLM(str(tmp_path), save_path=str(tmp_path), output_all_hiddens=True).eval()
        with torch.no_grad():
            states = lobe(ref["input"][1].unsqueeze(0))
        torch.testing.assert_close(states[:-1, 0], ref["output"][1][:-1], atol=TOL, rtol=0)


def hf_model_for(ref):
    hf_class = (
        transformers.WavLMModel
        if ref["model_name"] == "s3prl_wavlm"
        else transformers.Wav2Vec2Model
    )
    return hf_class(hf_config_from_official(ref["model_name"], ref["config"]))


def test_missing_key_is_an_error():
    ref = load(WAVLM)
    state_dict = dict(ref["state_dict"])
    del state_dict["ssl_model.model.model.encoder.layers.1.fc2.weight"]
    with pytest.raises(
        OfficialWeightsError,
        match=r"missing[\s\S]*encoder\.layers\.1\.feed_forward\.output_dense\.weight "
        r"\(official ssl_model\.model\.model\.encoder\.layers\.1\.fc2\.weight\)",
    ):
        hf_state_dict_from_official(ref["model_name"], hf_model_for(ref), state_dict)


def test_unknown_key_is_an_error():
    ref = load(XLSR)
    state_dict = dict(ref["state_dict"])
    state_dict["ssl_model.model.encoder.layers.0.self_attn.rotary.weight"] = torch.zeros(4)
    state_dict["ssl_model.model.encoder.layers.9.fc1.weight"] = torch.zeros(128, 64)
    with pytest.raises(OfficialWeightsError) as error:
        frontend_from_official(ref["model_name"], ref["config"], state_dict)
    message = str(error.value)
    assert "ssl_model.model.encoder.layers.0.self_attn.rotary.weight" in message
    assert "ssl_model.model.encoder.layers.9.fc1.weight -> encoder.layers.9" in message
    assert "(2)" in message  # the count of offending keys


def test_shape_mismatch_is_an_error():
    ref = load(WAVLM)
    config = dict(ref["config"], encoder_ffn_embed_dim=96)
    with pytest.raises(
        OfficialWeightsError,
        match=r"fc1\.weight \(128, 64\) -> .*intermediate_dense\.weight \(96, 64\)",
    ):
        hf_state_dict_from_official(
            ref["model_name"],
            transformers.WavLMModel(hf_config_from_official("s3prl_wavlm", config)),
            ref["state_dict"],
        )


def test_other_checkpoint_parts_and_pretraining_heads_are_ignored():
    ref = load(XLSR)
    state_dict = dict(ref["state_dict"])
    assert any(".quantizer." in key for key in state_dict)
    # A full official checkpoint also holds the back-end and the aggregation.
    state_dict["Nested_Res2Net_TDNN.fc.weight"] = torch.zeros(2, 1024)
    state_dict["ssl_model.fc_att_merge.0.weight"] = torch.zeros(8, 25)
    hf_model = hf_model_for(ref)
    mapped = hf_state_dict_from_official(ref["model_name"], hf_model, state_dict)
    assert set(mapped) == set(hf_model.state_dict())
    torch.testing.assert_close(mapped["masked_spec_embed"], state_dict["ssl_model.model.mask_emb"])
    torch.testing.assert_close(
        mapped["encoder.pos_conv_embed.conv.parametrizations.weight.original1"],
        state_dict["ssl_model.model.encoder.pos_conv.0.weight_v"],
    )


def test_wrong_prefix_is_an_error():
    ref = load(WAVLM)
    with pytest.raises(OfficialWeightsError, match="no key under 'ssl_model.model.model.'"):
        hf_state_dict_from_official("s3prl_wavlm", hf_model_for(ref), {"mask_emb": torch.zeros(64)})


@pytest.mark.parametrize(
    "model_name, field, value",
    [
        ("s3prl_wavlm", "gru_rel_pos", False),
        ("s3prl_wavlm", "relative_position_embedding", False),
        ("s3prl_wavlm", "extractor_mode", "conv_bn"),
        ("fairseq_wav2vec2", "layer_type", "conformer"),
        ("fairseq_wav2vec2", "pos_conv_depth", 5),
        ("fairseq_wav2vec2", "activation_fn", "relu_squared"),
    ],
)
def test_unrepresentable_config_is_an_error(model_name, field, value):
    config = dict(load(WAVLM)["config"], **{field: value})
    with pytest.raises(OfficialWeightsError, match=f"{field}={value!r}"):
        hf_config_from_official(model_name, config)


def test_config_translation():
    config = load(WAVLM)["config"]
    hf_config = hf_config_from_official("s3prl_wavlm", config)
    assert isinstance(hf_config, transformers.WavLMConfig)
    assert hf_config.conv_dim == [32] * 7
    assert hf_config.conv_kernel == [10, 3, 3, 3, 3, 2, 2]
    assert hf_config.conv_stride == [5, 2, 2, 2, 2, 2, 2]
    assert (hf_config.num_buckets, hf_config.max_bucket_distance) == (32, 80)
    assert (hf_config.num_conv_pos_embeddings, hf_config.num_conv_pos_embedding_groups) == (16, 4)
    assert hf_config.feat_extract_norm == "layer" and hf_config.do_stable_layer_norm
    assert hf_config.layerdrop == 0.0
    with pytest.raises(ValueError, match="unsupported expression"):
        parse_conv_feature_layers("__import__('os')")


TINY = {
    "encoder_layers": 2,
    "encoder_embed_dim": 16,
    "encoder_ffn_embed_dim": 32,
    "encoder_attention_heads": 2,
    "conv_feature_layers": "[(8, 10, 5)] + [(8, 3, 2)]",
    "conv_pos": 4,
    "conv_pos_groups": 2,
    "relative_position_embedding": True,
    "gru_rel_pos": True,
    "num_buckets": 16,
    "max_distance": 40,
    "dropout": 0.0,
    "attention_dropout": 0.0,
}


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize(
    "extractor_mode, layer_norm_first", [("default", False), ("layer_norm", False)]
)
def test_other_layouts_round_trip(model_name, extractor_mode, layer_norm_first):
    # Post-LN models (WavLM Base, wav2vec 2.0 Base) have no final encoder
    # LayerNorm: the official last state is the last layer's output as is.
    config = dict(TINY, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first)
    hf_class = (
        transformers.WavLMModel if model_name == "s3prl_wavlm" else transformers.Wav2Vec2Model
    )
    hf_model = hf_class(hf_config_from_official(model_name, config)).eval()
    state_dict = official_state_dict_from_hf(model_name, hf_model)
    prefix = OFFICIAL_PREFIXES[model_name]
    if extractor_mode == "default":
        assert prefix + "feature_extractor.conv_layers.0.2.weight" in state_dict
    frontend = frontend_from_official(model_name, config, state_dict)
    wavs = torch.randn(2, 3200)
    with torch.no_grad():
        states = frontend(wavs)
        expected = hf_model(wavs, output_hidden_states=True)
    torch.testing.assert_close(states, torch.stack(expected.hidden_states), atol=1e-5, rtol=0)
    torch.testing.assert_close(states[-1], expected.last_hidden_state, atol=1e-5, rtol=0)


POST_LN_CASES = torch.load(POST_LN, weights_only=True)


@pytest.mark.parametrize(
    "index",
    range(len(POST_LN_CASES["cases"])),
    ids=[f"{c['model_name']}-{c['config']['extractor_mode']}" for c in POST_LN_CASES["cases"]],
)
def test_post_layer_norm_layouts_match_s3prl(index):
    # The round trip above goes through our own reverse mapping, so a rule that
    # maps a weight consistently to the wrong place in both directions would
    # pass it. s3prl's own WavLM and wav2vec 2.0 (its copy of fairseq's model),
    # post-LN with every weight perturbed off its initial value, are an
    # independent reference for the Base layouts (tests/data/README.md).
    case = POST_LN_CASES["cases"][index]
    assert case["config"]["layer_norm_first"] is False
    frontend = frontend_from_official(case["model_name"], case["config"], case["state_dict"])
    layers = case["config"]["encoder_layers"]
    with torch.no_grad():
        for wav, expected in zip(POST_LN_CASES["input"], case["output"]):
            assert expected.shape[0] == layers + 1
            states = frontend(wav.unsqueeze(0))[:, 0]
            # Observed 1.5e-6 on states of magnitude ~4 (float32 round-off).
            torch.testing.assert_close(states, expected, atol=1e-5, rtol=0)
