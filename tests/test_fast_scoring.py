"""Fast scoring: bf16 weights cast once, WavLM attention on contiguous projections, batches, compile.

- bf16 holds bfloat16 copies of the SSL model's linear and convolution weights,
  cast once when the precision is set; what stays float32 is checked by
  looking at the weights each layer computes with; fp32 afterwards is the
  exact float32 model again;
- WavLM's attention (:func:`~speechbrain_nes2net.lobes.ssl.wavlm_attention`)
  computes what transformers' computes, padding included;
- padded batches score each file as alone, in bf16 too;
- ``compile_frontend`` compiles during its warm-up only: files of other
  durations run the same graphs (counted by a backend of our own, and
  ``torch.compiler.set_stance("fail_on_recompile")``).
"""

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.lobes.ssl import SSLFrontend, make_tiny_ssl_model
from speechbrain_nes2net.pretrained.export import write_export
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import EvalSettings

RATE = 16000
#: Durations (s) of the test files: every one a different length.
DURATIONS = (0.7, 1.3, 2.2, 1.9, 3.1, 0.9)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(SSL model folder, export folder, audio files of :data:`DURATIONS`)."""
    folder = tmp_path_factory.mktemp("fast")
    ssl_folder = make_tiny_ssl_model(folder / "tiny_wavlm")
    torch.manual_seed(0)
    kwargs = {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4}
    export = write_export(
        folder / "export", SSLFrontend(ssl_folder).eval(), build_aggregator("SEA", 3, 64).eval(),
        Nes2NetX(**kwargs).eval(), kwargs, settings=EvalSettings(),
    )  # fmt: skip
    rng = np.random.default_rng(5)
    paths = []
    for index, seconds in enumerate(DURATIONS):
        paths.append(folder / f"utt{index}.wav")
        sf.write(paths[-1], speech_like(rng, seconds), RATE)
    return ssl_folder, export, paths


def load(tiny, tmp_path):
    return AntiSpoofModel.from_hparams(source=str(tiny[1]), savedir=str(tmp_path / "savedir"))


def weights_seen(ssl, wavs):
    """{module name: (dtype, data_ptr)} of the weight each layer computes with in a forward pass.

    Read when the module is called: a LayerNorm, a linear layer, a feature encoder
    layer's convolution, the positional convolution (which the bf16 forward swaps
    for another module).
    """
    seen, hooks = {}, []
    for name, module in ssl.ssl.model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) or name.endswith("pos_conv_embed"):
            name, attribute = (f"{name}.conv", "conv") if name.endswith("pos_conv_embed") else (name, None)
        elif isinstance(getattr(module, "conv", None), torch.nn.Conv1d):  # a feature encoder layer
            name, attribute = f"{name}.conv", "conv"
        else:
            continue
        def record(module, args, name=name, attribute=attribute):
            weight = (getattr(module, attribute) if attribute else module).weight
            seen[name] = (weight.dtype, weight.data_ptr())
        hooks.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        ssl(wavs)
    for hook in hooks:
        hook.remove()
    return seen


def test_bf16_weights_are_cast_once_and_fp32_comes_back_exactly(tiny, tmp_path):
    model = load(tiny, tmp_path)
    ssl = model.encoder.ssl
    wavs = torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    before = {key: value.clone() for key, value in ssl.state_dict().items()}
    fp32 = model.score_batch(wavs, calibrated=False)

    model.set_precision("bf16")
    first, second = weights_seen(ssl, wavs), weights_seen(ssl, wavs)
    assert first == second  # the same bfloat16 tensors every call: cast once, not per call
    low = {name for name, (dtype, _) in first.items() if dtype == torch.bfloat16}
    layer_norms = {name for name, module in ssl.ssl.model.named_modules()
                   if isinstance(module, torch.nn.LayerNorm)}  # fmt: skip
    # bf16: every linear layer, the feature encoder's convolutions and the positional
    # convolution (its weight norm computed once); float32: the layer norms.
    assert low == set(first) - layer_norms
    assert "encoder.pos_conv_embed.conv" in low
    layers = len(ssl.ssl.model.feature_extractor.conv_layers)
    assert sum(name.startswith("feature_extractor.conv_layers") for name in low) == layers
    assert all(first[name][0] == torch.float32 for name in layer_norms)
    # Outside a forward pass the module holds its float32 weights (state_dict, export).
    assert all(value.dtype == before[key].dtype for key, value in ssl.state_dict().items())
    # The copies change nothing but speed: autocast rounds every weight the same way.
    bf16 = model.score_batch(wavs, calibrated=False)
    with torch.no_grad():
        states = ssl(wavs)
        ssl.precision = "fp32"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = ssl(wavs)
    assert states.dtype == torch.float32 and torch.equal(states, autocast.float())

    model.set_precision("bf16")
    model.set_precision("fp32")
    after = ssl.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())  # bit for bit
    assert torch.equal(model.score_batch(wavs, calibrated=False), fp32)
    assert not torch.equal(bf16, fp32)


def test_wavlm_attention_computes_what_transformers_computes(tiny):
    ours = SSLFrontend(tiny[0], normalize=False).eval()
    theirs = transformers.WavLMModel.from_pretrained(tiny[0]).eval()
    wavs = torch.randn(3, 20000, generator=torch.Generator().manual_seed(2))
    lens = torch.tensor([1.0, 0.8, 0.55])
    mask = torch.arange(20000)[None] < (lens * 20000).round()[:, None]
    with torch.no_grad():
        states = ours(wavs, lens)
        reference = theirs(wavs, attention_mask=mask.long(), output_hidden_states=True)
    frames = theirs._get_feat_extract_output_lengths(mask.sum(1))
    for layer in range(1, states.shape[0] - 1):  # every transformer layer's input
        for row, count in enumerate(frames.tolist()):
            got, want = states[layer, row, :count], reference.hidden_states[layer][row, :count]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batches_score_each_file_as_alone(tiny, tmp_path, precision):
    model = load(tiny, tmp_path)
    model.set_precision(precision)
    alone = [result.score for result in model.score_files(tiny[2], batch_size=1)]
    batched = [result.score for result in model.score_files(tiny[2], batch_size=4)]
    # bf16 products accumulate in float32, in another order in a batch: measured
    # 6e-6 apart (fp32 1e-7); a padding mask left out moves them by 5e-3.
    assert batched == pytest.approx(alone, abs=1e-5 if precision == "fp32" else 1e-4)


@pytest.mark.parametrize(("precision", "batch_size"), [("bf16", 1), ("fp32", 3)])
def test_compile_once_for_files_of_any_duration(tiny, tmp_path, precision, batch_size):
    model = load(tiny, tmp_path)
    model.set_precision(precision)
    expected = [result.score for result in model.score_files(tiny[2], batch_size=batch_size)]
    graphs = []

    def counting(graph, example_inputs):  # a torch.compile backend: counts, then runs eagerly
        graphs.append(graph)
        return graph.forward

    seconds = model.compile_frontend(batch_size, backend=counting)
    compiled = len(graphs)
    assert compiled >= 1 and seconds > 0
    with torch.compiler.set_stance("fail_on_recompile"):
        results = model.score_files(tiny[2], batch_size=batch_size)
    assert all(result.ok for result in results), [result.error for result in results]
    assert len(graphs) == compiled  # six durations, no new graph
    assert [result.score for result in results] == pytest.approx(expected, abs=1e-5)
