"""Export: the back-ends and the SEA aggregator through ONNX and TorchScript tracing.

Every export is run with onnxruntime (or the traced module) at two shapes
other than the one it was exported at, so a time or batch axis frozen into
the graph, or a mask that ignores ``lengths``, fails here.
"""

import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX

SMALL = {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4}
#: (batch, time) shapes the exported graphs are run at; export uses (2, 37).
SHAPES = [(3, 23), (1, 81)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _scoring(build, seed=0):
    """``build()`` seeded, in eval mode, with batch-norm statistics that matter."""
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buffer.normal_(0.0, 0.2)
    return model.eval()


def _inputs(batch, time, with_lengths, seed=1):
    generator = torch.Generator().manual_seed(seed + time)
    features = torch.randn(batch, time, 64, generator=generator)
    lengths = torch.linspace(1.0, 0.3, batch) if batch > 1 else torch.ones(1)
    return (features, lengths) if with_lengths else (features,)


def _export(model, args, path, names, dynamo):
    """Exports with a dynamic batch and time axis; returns an onnxruntime session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes
        if dynamo:
            batch, time = torch.export.Dim("batch", max=64), torch.export.Dim("time", min=2, max=4096)
            shapes = [{0: batch, 1: time}, {0: batch}][: len(args)]
            torch.onnx.export(
                model, args, path, dynamo=True, input_names=names, output_names=["out"],
                dynamic_shapes=tuple(shapes), verbose=False,
            )  # fmt: skip
        else:
            axes = {"features": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "out": {0: "batch"}}
            torch.onnx.export(
                model, args, path, dynamo=False, opset_version=17, input_names=names,
                output_names=["out"], dynamic_axes={name: axes[name] for name in names + ["out"]},
            )  # fmt: skip
    graph = onnx.load(str(path)).graph
    # Standard ONNX operators only: no ATen fallbacks, no custom domains.
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _max_difference(session, model, make_inputs):
    """Largest |onnxruntime - torch| over :data:`SHAPES`."""
    worst = 0.0
    names = [i.name for i in session.get_inputs()]
    for batch, time in SHAPES:
        args = make_inputs(batch, time)
        got = session.run(None, {name: a.numpy() for name, a in zip(names, args)})[0]
        with torch.no_grad():
            expected = model(*args).numpy()
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@pytest.mark.parametrize(
    "cls,config",
    [(Nes2Net, {}), (Nes2NetX, {}), (Nes2NetX, {"n_out": 2, "pooling": "ASTP", "dilation": 2})],
    ids=["nes2net", "nes2net_x", "nes2net_x_2logits_astp"],
)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["features", "lengths"])
def test_backend_onnx_export_matches_torch_at_other_lengths(tmp_path, cls, config, with_lengths):
    model = _scoring(lambda: cls(**SMALL, **config))
    names = ["features", "lengths"][: 1 + with_lengths]
    session = _export(model, _inputs(2, 37, with_lengths), tmp_path / "backend.onnx", names, dynamo=False)
    assert _max_difference(session, model, lambda b, t: _inputs(b, t, with_lengths)) <= 1e-4


def test_backend_dynamo_onnx_export_with_lengths(tmp_path):
    # The torch.export-based exporter (the default since torch 2.9).
    model = _scoring(lambda: Nes2NetX(**SMALL, n_out=2))
    session = _export(model, _inputs(2, 37, True), tmp_path / "backend.onnx", ["features", "lengths"], dynamo=True)
    assert _max_difference(session, model, lambda b, t: _inputs(b, t, True)) <= 1e-4


def test_exported_lengths_mask_the_padding(tmp_path):
    # The lengths input is live in the graph: garbage in the padding leaves
    # each utterance's score as it is alone.
    model = _scoring(lambda: Nes2NetX(**SMALL, kernel_size=5, dilation=3))
    session = _export(model, _inputs(2, 37, True), tmp_path / "backend.onnx", ["features", "lengths"], dynamo=False)
    alone = torch.randn(1, 8, 64)
    padded = torch.cat([alone, torch.full((1, 16, 64), 1e3)], dim=1)

    def run(x, lengths):
        return session.run(None, {"features": x.numpy(), "lengths": lengths.numpy()})[0]

    # A leak moves this score by ~1e-5 to 1e-4; float32 rounding by ~1e-7.
    assert np.abs(run(padded, torch.tensor([8 / 24])) - run(alone, torch.ones(1))).max() <= 2e-6


@pytest.mark.parametrize("with_lengths", [False, True], ids=["states", "lengths"])
def test_sea_aggregator_onnx_export_matches_torch(tmp_path, with_lengths):
    model = _scoring(lambda: build_aggregator("SEA", 5, 64))

    def states(batch, time):
        generator = torch.Generator().manual_seed(time)
        hidden = torch.randn(5, batch, time, 64, generator=generator)
        lengths = torch.linspace(1.0, 0.4, batch) if batch > 1 else torch.ones(1)
        return (hidden, lengths) if with_lengths else (hidden,)

    names = ["states", "lengths"][: 1 + with_lengths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {"states": {1: "batch", 2: "time"}, "lengths": {0: "batch"}, "out": {0: "batch", 1: "time"}}
        torch.onnx.export(
            model, states(2, 37), tmp_path / "sea.onnx", dynamo=False, opset_version=17,
            input_names=names, output_names=["out"],
            dynamic_axes={name: axes[name] for name in names + ["out"]},
        )  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "sea.onnx"), providers=["CPUExecutionProvider"])
    assert _max_difference(session, model, states) <= 1e-4


@pytest.mark.parametrize("cls", [Nes2Net, Nes2NetX])
def test_traced_backend_matches_eager_at_other_lengths(cls):
    model = _scoring(lambda: cls(**SMALL, kernel_size=5, dilation=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _inputs(2, 37, True))
    for batch, time in SHAPES:
        args = _inputs(batch, time, True)
        with torch.no_grad():
            assert (traced(*args) - model(*args)).abs().max().item() <= 1e-5
