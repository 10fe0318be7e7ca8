"""Export of training runs and official checkpoints as SpeechBrain model folders."""

import json
import math
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ruamel.yaml
import torch
import transformers
import yaml

from speechbrain_nes2net.evaluation.calibration import DecisionRule
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.official.backend import (
    OfficialWeightsError,
    aggregator_from_official,
    backend_from_official,
    official_backend_state_dict,
)
from speechbrain_nes2net.official.convert import (
    WAVLM_LARGE_CONFIG,
    XLSR_300M_CONFIG,
    convert_official_checkpoint,
    load_official_checkpoint,
)
from speechbrain_nes2net.official.frontend import (
    hf_config_from_official,
    official_state_dict_from_hf,
)
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.ssl import SSLFrontendFromConfig, make_tiny_ssl_model
from speechbrain_nes2net.pretrained.export import (
    ExportError,
    ExportOptions,
    _load_run,
    _verify_export,
    export_run,
    hyperparams_text,
    write_export,
)
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.training.checkpoints import select_checkpoints

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "official_nes2net"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
# Two epochs: two checkpoints (keep_checkpoints: 2), for "best", "last" and averaging.
QUICK_DEMO = ["--number_of_epochs=2", "--n_train=20", "--n_dev=6", "--n_test=6"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(args, cwd=ROOT):
    result = subprocess.run(
        args, check=False, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def read_scores(path):
    return {
        key: float(value) for key, value in (l.split() for l in Path(path).read_text().splitlines())
    }


# ------------------------------------------------------------ training run


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    run(
        [sys.executable, "recipes/train.py", "hparams/demo.yaml", f"--output_folder={out}"]
        + QUICK_DEMO
    )
    return out


@pytest.fixture(scope="module")
def demo_export(demo_run, tmp_path_factory):
    return export_run(demo_run, tmp_path_factory.mktemp("export") / "demo_model")


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from speechbrain.inference.classifiers import EncoderClassifier
    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
    source, savedir, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    clf = EncoderClassifier.from_hparams(source=source, savedir=savedir)
    ours = AntiSpoofModel.from_hparams(source=source)
    out = {}
    for utt_id, path in files.items():
        out_prob, score, index, label = clf.classify_file(path)
        out[utt_id] = {
            "log_odds": float(out_prob[0, 1] - out_prob[0, 0]),
            "max_log_prob": float(score[0]), "index": int(index[0]), "label": label[0],
            "score": ours.score_file(path),
        }
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_exported_demo_scores_like_the_training_run_in_a_fresh_process(
    demo_run, demo_export, tmp_path
):
    # Relocated and loaded from another working directory: nothing may point
    # back to the run or to the place the export was written.
    hub_ready = tmp_path / "upload" / "model"
    shutil.copytree(demo_export, hub_ready)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = read_manifest(demo_run / "save" / "manifests" / "test.csv")
    files = dict(zip(manifest["ID"], manifest["wav"]))
    result = run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            "../upload/model",
            str(tmp_path / "savedir"),
            json.dumps(files),
        ],
        cwd=elsewhere,
    )
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    training = read_scores(demo_run / "scores" / "demo_test_scores.txt")
    assert set(scored) == set(training) and len(training) == 12
    # The exported head decides by the run's decision rule (fitted on dev):
    # its log-odds are the rule's log-odds of the training score.
    hparams = ruamel.yaml.YAML(typ="rt").load((demo_export / "hyperparams.yaml").read_text())
    rule = DecisionRule.from_dict(json.loads(json.dumps(hparams["decision"])))
    for utt_id, expected in training.items():
        got = scored[utt_id]
        assert got["score"] == pytest.approx(expected, abs=1e-5), utt_id
        assert got["log_odds"] == pytest.approx(float(rule.log_odds(expected)), abs=1e-5), utt_id
        assert got["label"] == ("bonafide" if got["index"] == 1 else "spoof")
        assert got["index"] == int(got["log_odds"] > 0)
        assert got["max_log_prob"] <= 0


def test_export_folder_is_self_contained_and_documented(demo_run, demo_export):
    names = sorted(path.name for path in demo_export.iterdir())
    assert names == [
        "README.md",
        "aggregator.ckpt",
        "backend.ckpt",
        "custom_interface.py",
        "hyperparams.yaml",
        "label_encoder.ckpt",
        "ssl.ckpt",
    ]
    for path in demo_export.iterdir():
        assert not path.is_symlink()
        if path.suffix in (".yaml", ".md", ".py", ".ckpt") and path.name != "ssl.ckpt":
            text = path.read_bytes().decode("utf-8", errors="ignore")
            assert str(demo_run) not in text and "/tmp" not in text, path.name
    hparams = ruamel.yaml.YAML(typ="rt").load((demo_export / "hyperparams.yaml").read_text())
    # The demo fine-tunes its SSL model: stored here, rebuilt from the inline config.
    assert hparams["ssl"].tag.value.endswith("SSLFrontendFromConfig")
    assert hparams["ssl"]["config"]["hidden_size"] == 64
    assert hparams["eval_min_samples"] == 8000 and hparams["eval_samples"] is None
    assert "paths" not in hparams["pretrainer"]
    labels = (demo_export / "label_encoder.ckpt").read_text()
    assert "'spoof' => 0" in labels and "'bonafide' => 1" in labels
    card = (demo_export / "README.md").read_text()
    metrics = json.loads((demo_run / "scores" / "demo_test_metrics.json").read_text())
    assert f"{100 * metrics['eer']:.2f}" in card
    assert "## Licence" in card and "library_name: speechbrain" in card
    assert "Higher = more bona fide" in card


def test_export_options_and_refusals(demo_run, demo_export, tmp_path):
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_run(demo_run, demo_export)
    with pytest.raises(ExportError, match="average 3 checkpoints"):
        export_run(demo_run, tmp_path / "avg", average=3)
    with pytest.raises(ExportError, match="not a training run folder"):
        export_run(tmp_path, tmp_path / "nothing")
    other = export_run(
        demo_run,
        tmp_path / "last",
        checkpoint="last",
        options=ExportOptions(eval_samples=12000, calibration={"scale": 2.0, "offset": -1.0}),
        verify=False,
    )
    text = (other / "hyperparams.yaml").read_text()
    assert "eval_samples: 12000" in text
    assert 'calibration: {"scale": 2.0, "offset": -1.0, "prior": 0.5}' in text
    full = export_run(demo_run, tmp_path / "full", options=ExportOptions(eval_samples="full"),
                      verify=False)  # fmt: skip
    assert "eval_samples: null" in (full / "hyperparams.yaml").read_text()
    # Each export holds the weights of the checkpoint it names.
    # (Two epochs of the demo can tie on dev EER; the tie-break is the selection's.)
    best = select_checkpoints(demo_run / "save", "best", 1, "EER")[0].path
    last = max(run_checkpoints(demo_run), key=lambda ckpt: ckpt[0]["unixtime"])[1]
    for name in ("ssl", "aggregator", "backend"):
        assert_same_weights(torch.load(demo_export / f"{name}.ckpt"), torch.load(best / f"{name}.ckpt"))
        assert_same_weights(torch.load(other / f"{name}.ckpt"), torch.load(last / f"{name}.ckpt"))



def test_export_decides_at_the_decision_prior_it_is_given(demo_run, tmp_path):
    # A bona fide prior of 0.1 asks for an LLR of ln 9 before calling a file bona fide.
    calibration = {"scale": 2.0, "offset": -1.0}
    options = ExportOptions(calibration=calibration, decision_prior=0.1)
    export = export_run(demo_run, tmp_path / "prior", checkpoint="last", options=options,
                        verify=False)  # fmt: skip
    model = AntiSpoofModel.from_hparams(source=str(export), savedir=str(tmp_path / "sd"))
    rule = model.decision
    assert rule.prior == pytest.approx(0.1)
    assert rule.threshold == pytest.approx((math.log(9) + 1.0) / 2.0)
    llr_at = lambda raw: 2.0 * raw - 1.0  # noqa: E731
    assert rule.is_bonafide([rule.threshold + 1e-6, rule.threshold - 1e-6]).tolist() == [True, False]
    assert llr_at(rule.threshold) == pytest.approx(math.log(9))


def test_a_run_without_its_decision_rule_needs_a_calibration(demo_run, tmp_path):
    # The run's YAML alone: its checkpoints and SSL model are found where the run left them.
    bare = tmp_path / "bare_run"
    bare.mkdir()
    shutil.copy(demo_run / "hyperparams.yaml", bare / "hyperparams.yaml")
    with pytest.raises(ExportError, match=r"no decision\.json.*pass a calibration"):
        export_run(bare, tmp_path / "refused", verify=False)
    assert not (tmp_path / "refused").exists()
    calibration = {"scale": 2.0, "offset": -1.0}
    options = ExportOptions(calibration=calibration)
    export = export_run(bare, tmp_path / "calibrated", options=options, verify=False)
    model = AntiSpoofModel.from_hparams(source=str(export), savedir=str(tmp_path / "sd"))
    assert model.decision.source == "calibration"
    assert model.decision.threshold == pytest.approx(0.5)  # LLR 0 at the prior 0.5

def run_checkpoints(run_folder):
    """(meta, folder) of the checkpoints a run kept."""
    folders = sorted((Path(run_folder) / "save").glob("CKPT+*"))
    return [(yaml.safe_load((folder / "CKPT.yaml").read_text()), folder) for folder in folders]


def assert_same_weights(got, expected):
    """The two state dicts hold the same tensors."""
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in got)


@pytest.mark.slow
def test_export_average_is_the_elementwise_mean_of_the_checkpoints(demo_run, tmp_path):
    checkpoints = run_checkpoints(demo_run)
    assert len(checkpoints) == 2
    averaged = export_run(demo_run, tmp_path / "avg", average=2, verify=False)
    for name in ("aggregator", "backend"):
        first, second = (torch.load(folder / f"{name}.ckpt") for _, folder in checkpoints)
        got = torch.load(averaged / f"{name}.ckpt")
        floats = [key for key in got if got[key].is_floating_point()]
        assert floats
        for key in floats:
            assert torch.allclose(got[key], (first[key] + second[key]) / 2, atol=1e-7), (name, key)
        assert any(not torch.equal(got[key], first[key]) for key in floats)
    # Not the weights the run's decision rule was fitted for, and no calibration given:
    # labels follow the raw score's sign, as the card says.
    hparams = yaml.safe_load((averaged / "hyperparams.yaml").read_text().split("\n# Model")[0])
    assert hparams["decision"]["source"] == "logit_0"
    assert "no threshold was fitted" in (averaged / "README.md").read_text()


def tiny_frontend():
    """A randomly initialised one-layer WavLM of width 32."""
    config = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=8, conv_dim=[8], conv_kernel=[10], conv_stride=[5])  # fmt: skip
    return SSLFrontendFromConfig("wavlm", config, normalize=True)


def test_exported_yaml_rebuilds_only_what_it_can_write():
    ssl, aggregator = tiny_frontend(), build_aggregator("weighted_sum", 2, 32)
    kwargs = {"input_size": 32, "outer_ratio": 4, "inner_ratio": 2, "activation": "selu"}
    write = lambda backend, backend_kwargs, agg=aggregator: hyperparams_text(  # noqa: E731
        ssl, agg, backend, backend_kwargs, EvalSettings().resolved(),
        DecisionRule(0.0, source="logit_0").to_dict(),
    )  # fmt: skip
    text = write(Nes2NetX(**kwargs), kwargs)
    # The written YAML holds the arguments as given, and reads back to the same values.
    entry = text[text.index("backend:"):text.index("# EncoderClassifier")]
    reread = ruamel.yaml.YAML(typ="rt").load(entry)["backend"]
    assert reread.tag.value == "!new:speechbrain_nes2net.lobes.nes2net.Nes2NetX"
    assert dict(reread) == kwargs
    with pytest.raises(ExportError, match="plain values"):
        write(Nes2NetX(**kwargs), {**kwargs, "activation": torch.nn.SELU()})
    with pytest.raises(ExportError, match="arguments build"):
        write(Nes2NetX(**kwargs), {**kwargs, "activation": "relu"})
    with pytest.raises(ExportError, match="back-ends"):
        write(torch.nn.Linear(32, 1), {"in_features": 32, "out_features": 1})
    with pytest.raises(ExportError, match="build_aggregator"):
        write(Nes2NetX(**kwargs), kwargs, agg=torch.nn.Identity())


def test_the_export_check_refuses_a_folder_that_scores_otherwise(tmp_path):
    # The folder, loaded by stock EncoderClassifier, must give the live modules' logits.
    torch.manual_seed(0)
    ssl, aggregator = tiny_frontend().eval(), build_aggregator("weighted_sum", 2, 32).eval()
    kwargs = {"input_size": 32, "outer_ratio": 4, "inner_ratio": 2}
    folder = write_export(tmp_path / "model", ssl, aggregator, Nes2NetX(**kwargs).eval(), kwargs)
    other = Nes2NetX(**kwargs).eval()  # the same layers, other weights
    with pytest.raises(ExportError, match="does not reproduce the model"):
        _verify_export(folder, ssl, aggregator, other, EvalSettings().resolved())


@pytest.mark.parametrize(
    "yaml_name",
    ["nes2net_ctrsvdd.yaml", "nes2net_x_selu_ctrsvdd.yaml", "aasist_ctrsvdd.yaml",
     "nes2net_x_partialspoof_localization.yaml"],
)  # fmt: skip
def test_every_recipe_back_end_is_exported_with_the_arguments_it_was_built_with(
    yaml_name, tmp_path
):
    # A run folder of the recipe: its YAML, with a tiny SSL model instead of the hub's.
    tiny = make_tiny_ssl_model(tmp_path / "tiny_wavlm")
    shutil.copy(ROOT / "hparams" / yaml_name, tmp_path / "hyperparams.yaml")
    overrides = {"output_folder": str(tmp_path / "out"), "data_folder": str(tmp_path),
                 "ssl_source": str(tiny), "ssl_dim": 64, "ssl_layers": 3}  # fmt: skip
    hparams, backend_kwargs = _load_run(tmp_path, overrides)
    recipe = ruamel.yaml.YAML(typ="rt").load((ROOT / "hparams" / yaml_name).read_text())
    written = {key: value for key, value in recipe["backend"].items() if key != "input_size"}
    assert backend_kwargs == {**written, "input_size": 64}
    modules = hparams["modules"]
    text = hyperparams_text(
        modules["ssl"], modules["aggregator"], modules["backend"], backend_kwargs,
        EvalSettings().resolved(), DecisionRule(0.0, source="logit_0").to_dict(),
    )  # fmt: skip
    assert f"backend: !new:{recipe['backend'].tag.value[len('!new:'):]}" in text


# ------------------------------------------------------ official checkpoints


def fixture(name):
    return torch.load(FIXTURES / name, weights_only=True)


def randomised(module, seed):
    """The module with random weights and batch-norm statistics (eval outputs then vary)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(0.5 + values if "var" in name else values - 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def wavlm_checkpoint():
    """Official CtrSVDD layout: tiny s3prl WavLM + SEA over its 4 states + Nes2Net-X."""
    front = fixture("ctrsvdd_s3prl_wavlm_frontend_tiny.pt")
    backend = randomised(Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4), 1)
    state = dict(front["state_dict"])
    state.update(official_backend_state_dict(backend))
    generator = torch.Generator().manual_seed(2)
    state["ssl_model.fc_att_merge.0.weight"] = torch.randn(1, 4, generator=generator)
    state["ssl_model.fc_att_merge.2.weight"] = torch.randn(4, 1, generator=generator)
    config = {"Nes_ratio": [4, 4], "input_channel": 64, "dilation": 1, "SE_ratio": [1]}
    return front, state, config


def test_official_wavlm_checkpoint_converts_end_to_end(wavlm_checkpoint, tmp_path):
    front, state, config = wavlm_checkpoint
    export = convert_official_checkpoint(
        state,
        tmp_path / "ctrsvdd",
        "WavLM_Nes2Net_X",
        config,
        ssl_config=front["config"],
        verify=False,  # checked below, against the official modules
    )
    model = AntiSpoofModel.from_hparams(source=str(export), savedir=str(tmp_path / "sd"))
    aggregator = aggregator_from_official("WavLM_SEA", {"n_layers": 4, "dim": 64}, state)
    backend = backend_from_official("WavLM_Nes2Net_X", config, state)
    for wav, official_states in zip(front["input"], front["output"]):
        with torch.no_grad():
            # The exported front-end reproduces the official s3prl states ...
            states = model.encoder.ssl(wav.unsqueeze(0))
            torch.testing.assert_close(states[:, 0], official_states, atol=1e-4, rtol=0)
            # ... and the whole export the official aggregation + back-end on them.
            expected = backend(aggregator(official_states.unsqueeze(1)))[:, -1]
        assert model.score_batch(wav.unsqueeze(0)) == pytest.approx(expected.tolist(), abs=1e-4)
    assert "WavLM_SEA" in (export / "README.md").read_text()


def test_official_xlsr_checkpoint_converts_end_to_end(tmp_path):
    front = fixture("asvspoof_fairseq_xlsr_frontend_tiny.pt")
    backend = randomised(
        Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, dilation=2, n_out=2), 3
    )
    # Saved from a DataParallel model, as a .pth file.
    official = {**front["state_dict"], **official_backend_state_dict(backend)}
    path = tmp_path / "asvspoof.pth"
    torch.save({"module." + key: value for key, value in official.items()}, path)
    config = {"Nes_ratio": [4, 4], "dilation": 2, "SE_ratio": [1]}
    full = convert_official_checkpoint(
        path,
        tmp_path / "full",
        "wav2vec2_Nes2Net_X",
        config,
        ssl_config=front["config"],
        verify=False,  # checked below, against the official modules
    )
    model = AntiSpoofModel.from_hparams(source=str(full))
    for wav, last_layer in zip(front["input"], front["output"]):
        with torch.no_grad():
            states = model.encoder.ssl(wav.unsqueeze(0))
            torch.testing.assert_close(states[-1, 0], last_layer, atol=1e-4, rtol=0)
            # Two logits: the bona fide score is logit index 1.
            expected = backend(last_layer.unsqueeze(0))[:, 1]
        assert model.score_batch(wav.unsqueeze(0)) == pytest.approx(expected.tolist(), abs=1e-4)
    # The release's fixed-length mode: first N samples, repeat-padded.
    cropped = convert_official_checkpoint(
        path,
        tmp_path / "cropped",
        "wav2vec2_Nes2Net_X",
        config,
        ssl_config=front["config"],
        eval_samples=12000,
        verify=False,
    )
    crop_model = AntiSpoofModel.from_hparams(source=str(cropped))
    long_wav, short_wav = front["input"]
    assert (len(long_wav), len(short_wav)) == (16000, 11200)
    assert crop_model.score_batch(long_wav[None]) == pytest.approx(
        model.score_batch(long_wav[None, :12000]).tolist(), abs=1e-5
    )
    padded = torch.cat([short_wav, short_wav[:800]])
    assert crop_model.score_batch(short_wav[None]) == pytest.approx(
        model.score_batch(padded[None]).tolist(), abs=1e-5
    )


def tiny_1024_frontend(model_name):
    """An official-layout front-end as wide as the released ones (1024), two layers."""
    config = dict(
        extractor_mode="layer_norm",
        layer_norm_first=True,
        encoder_layers=2,
        encoder_embed_dim=1024,
        encoder_ffn_embed_dim=32,
        encoder_attention_heads=2,
        conv_feature_layers="[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
        conv_pos=4,
        conv_pos_groups=2,
        conv_bias=True,
        relative_position_embedding=True,
        gru_rel_pos=True,
        num_buckets=8,
        max_distance=16,
        normalize=True,
        dropout=0.0,
        attention_dropout=0.0,
    )
    hf_class = (
        transformers.WavLMModel if model_name == "s3prl_wavlm" else transformers.Wav2Vec2Model
    )
    torch.manual_seed(4)
    hf_model = hf_class(hf_config_from_official(model_name, config))
    return config, official_state_dict_from_hf(model_name, hf_model)


@pytest.mark.parametrize(
    "name, ssl_name",
    [("ctrsvdd_nes2net.pt", "s3prl_wavlm"), ("asvspoof_nes2net_x_2logits.pt", "fairseq_wav2vec2")],
)
def test_converted_backend_reproduces_official_backend_fixture(name, ssl_name, tmp_path):
    ref = fixture(name)
    ssl_config, ssl_state = tiny_1024_frontend(ssl_name)
    state = {**ssl_state, **ref["state_dict"]}
    if ssl_name == "s3prl_wavlm":
        state["ssl_model.fc_att_merge.0.weight"] = torch.randn(1, 3)
        state["ssl_model.fc_att_merge.2.weight"] = torch.randn(3, 1)
    export = convert_official_checkpoint(
        state,
        tmp_path / "model",
        ref["model_name"],
        ref["config"],
        ssl_config=ssl_config,
        verify=False,  # checked below, against the official fixture
    )
    model = AntiSpoofModel.from_hparams(source=str(export))
    with torch.no_grad():
        logits = model.mods.classifier.logits(
            model.encoder.backend.embed(ref["input"].transpose(1, 2))
        )
    torch.testing.assert_close(logits, ref["output"], atol=1e-5, rtol=0)


def test_official_conversion_lists_unmapped_and_missing_keys(wavlm_checkpoint, tmp_path):
    front, state, config = wavlm_checkpoint
    convert = lambda s: convert_official_checkpoint(
        s, tmp_path / "x", "WavLM_Nes2Net_X", config, ssl_config=front["config"], verify=False
    )
    with pytest.raises(
        OfficialWeightsError, match=r"(?s)belong to no part.*LL\.weight.*first_bn"
    ):
        convert({**state, "LL.weight": torch.zeros(1), "first_bn.bias": torch.zeros(1)})
    extra_ssl = {**state, "ssl_model.model.model.encoder.extra_head.weight": torch.zeros(1)}
    with pytest.raises(OfficialWeightsError, match="extra_head"):
        convert(extra_ssl)
    missing_ssl = {k: v for k, v in state.items() if not k.endswith("encoder.layers.1.fc2.weight")}
    with pytest.raises(
        OfficialWeightsError, match=r"layers\.1\.feed_forward\.output_dense\.weight"
    ):
        convert(missing_ssl)
    missing_backend = {
        k: v for k, v in state.items() if not k.endswith("Build_in_Res2Nets.0.bn1.weight")
    }
    with pytest.raises(OfficialWeightsError, match=r"blocks\.0\.bn_in\.weight"):
        convert(missing_backend)
    with pytest.raises(OfficialWeightsError, match="unexpected"):
        convert({**state, "ssl_model.fc_att_merge.4.weight": torch.zeros(1)})
    assert not (tmp_path / "x").exists()


def test_released_ssl_presets_describe_the_released_models():
    wavlm = hf_config_from_official("s3prl_wavlm", WAVLM_LARGE_CONFIG)
    xlsr = hf_config_from_official("fairseq_wav2vec2", XLSR_300M_CONFIG)
    for config in (wavlm, xlsr):
        assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (
            24,
            1024,
            4096,
        )
        assert config.do_stable_layer_norm and config.feat_extract_norm == "layer"
        assert config.conv_stride == [5, 2, 2, 2, 2, 2, 2]
    assert (wavlm.num_buckets, wavlm.max_bucket_distance, wavlm.conv_bias) == (320, 800, False)
    assert xlsr.conv_bias is True


def test_load_official_checkpoint_unwraps_and_refuses(tmp_path):
    assert list(load_official_checkpoint({"state_dict": {"module.a": torch.zeros(1)}})) == ["a"]
    with pytest.raises(OfficialWeightsError, match="not a state dict"):
        load_official_checkpoint({"epoch": 3})


def test_export_recipe_converts_an_official_file(wavlm_checkpoint, tmp_path):
    front, state, _ = wavlm_checkpoint
    (tmp_path / "ssl.json").write_text(json.dumps(front["config"]))
    torch.save(state, tmp_path / "official.pt")
    recipe = runpy.run_path(str(ROOT / "recipes" / "export.py"))
    status = recipe["main"](
        [
            "official",
            str(tmp_path / "official.pt"),
            str(tmp_path / "out"),
            "--backend",
            "WavLM_Nes2Net_X",
            "--Nes_ratio",
            "4",
            "4",
            "--ssl-config",
            str(tmp_path / "ssl.json"),
            "--no-verify",
        ]
    )
    assert status == 0
    text = (tmp_path / "out" / "hyperparams.yaml").read_text()
    assert "dilation: 1" in text and "outer_ratio: 4" in text and 'name: "SEA"' in text
