"""The whole model as one ONNX graph: ``nes2net-export-onnx``.

Usage::

    nes2net-export-onnx --model exports/nes2net_x_ctrsvdd --output model.onnx
    nes2net-export-onnx --model exports/nes2net_x_ctrsvdd --output model_int8.onnx --quantize int8
    nes2net-score --model model.onnx --output scores.txt audio_dir/      # onnxruntime, no torch model

The graph maps prepared 16 kHz mono waveforms ``waveform`` (batch, samples)
and their valid ``lengths`` to the raw bona fide ``score`` (batch,) and the
``logits``, padding masked as in torch; everything around it (reading, crop,
windows, calibration, decision) stays in
:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`, with the
settings in the file's metadata. Every export must reproduce the torch
model's fp32 scores (``atol``) before it is written; ``--quantize int8``
then applies onnxruntime's dynamic quantisation. The exporter is torch's
TorchScript-based one (``dynamo=False``): seconds here, where ``torch.export``
takes a minute and fixes the batch axis. Details: docs/DEPLOYING.md.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from speechbrain_nes2net.pretrained.export import ExportError
from speechbrain_nes2net.pretrained.model_identity import export_folder_digest
from speechbrain_nes2net.pretrained.onnx_model import ONNX_FORMAT, make_session

logger = logging.getLogger(__name__)

#: Largest |onnxruntime - torch| score difference an fp32 export may show.
DEFAULT_ATOL = 1e-4


class ScoringGraph(nn.Module):
    """The exported computation: prepared waveforms + valid lengths -> (score, logits).

    What :class:`~speechbrain_nes2net.pretrained.modules.AntiSpoofEncoder`
    (without preprocessing and windows) and
    :class:`~speechbrain_nes2net.pretrained.modules.AntiSpoofHead` compute,
    from the same modules, with lengths as tensors so that a trace keeps the
    batch and time axes dynamic; :func:`export_onnx` checks it against the
    torch model.

    Arguments
    ---------
    encoder : AntiSpoofEncoder
        The model's encoder (its ``ssl`` an :class:`~speechbrain_nes2net.lobes.ssl.SSLFrontend`).
    head : AntiSpoofHead
        The model's output layer.

    Example
    -------
    >>> from speechbrain_nes2net.lobes.ssl import SSLFrontendFromConfig
    >>> from speechbrain_nes2net.lobes.aggregation import LastLayer
    >>> from speechbrain_nes2net.lobes.nes2net import Nes2Net
    >>> from speechbrain_nes2net.pretrained.modules import AntiSpoofEncoder, AntiSpoofHead
    >>> config = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...     intermediate_size=32, conv_dim=[8, 8], conv_kernel=[10, 3], conv_stride=[5, 2],
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
    ...     feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0)
    >>> ssl = SSLFrontendFromConfig("wavlm", config, normalize=True).eval()
    >>> backend = Nes2Net(input_size=16, outer_ratio=2, inner_ratio=2).eval()
    >>> graph = ScoringGraph(AntiSpoofEncoder(ssl, LastLayer(), backend), AntiSpoofHead(backend))
    >>> score, logits = graph(torch.randn(2, 1600), torch.tensor([1600, 900]))
    >>> score.shape, logits.shape
    (torch.Size([2]), torch.Size([2, 1]))
    """

    def __init__(self, encoder, head):
        super().__init__()
        from speechbrain_nes2net.lobes.ssl import SSLFrontend

        if not isinstance(encoder.ssl, SSLFrontend):
            raise ExportError(
                f"ONNX export needs an SSLFrontend front-end, got {type(encoder.ssl).__name__}"
            )
        self.frontend = encoder.ssl
        self.model = encoder.ssl.ssl.model  # the transformers model inside SpeechBrain's lobe
        self.aggregator = encoder.aggregator
        self.backend = encoder.backend
        self.head = head

    def forward(self, waveform, lengths):
        """(batch,) bona fide scores and (batch, n_out) logits of padded waveforms.

        Arguments
        ---------
        waveform : torch.Tensor
            (batch, samples) float32 16 kHz waveforms, already prepared.
        lengths : torch.Tensor
            (batch,) int64 valid samples.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
        """
        from speechbrain_nes2net.lobes.ssl import normalize_valid_samples

        positions = torch.arange(waveform.shape[1], device=waveform.device)
        valid = positions.unsqueeze(0) < lengths.unsqueeze(1)
        if self.frontend.normalize:
            waveform = normalize_valid_samples(waveform, lengths)
        out = self.model(waveform, attention_mask=valid.long(), output_hidden_states=True)
        states = torch.stack(list(out.hidden_states), dim=0)
        if getattr(self.model.config, "do_stable_layer_norm", False):
            final = self.model.encoder.layer_norm(states[-1])
            states = torch.cat([states[:-1], final.unsqueeze(0)], dim=0)
        frames = states.shape[2]
        counts = self.model._get_feat_extract_output_lengths(lengths)
        counts = torch.minimum(counts.clamp(min=1), torch.full_like(counts, frames))
        frame_lengths = counts.to(torch.float32) / frames
        features = self.aggregator(states, frame_lengths)
        logits = self.head.logits(self.backend.embed(features, frame_lengths))
        return logits[:, -1], logits


def _load_model(model):
    """An AntiSpoofModel (fp32, CPU) and its folder (None for a live model)."""
    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    if isinstance(model, AntiSpoofModel):
        return model, None
    folder = Path(model)
    if not (folder / "hyperparams.yaml").is_file():
        raise ExportError(
            f"{folder}: not an exported model folder (no hyperparams.yaml); export a training run "
            "first (python recipes/export.py run RUN EXPORT)"
        )
    savedir = tempfile.mkdtemp(prefix="nes2net_onnx_")
    loaded = AntiSpoofModel.from_hparams(
        source=str(folder), savedir=savedir, run_opts={"device": "cpu"}
    )
    return loaded, folder


def _metadata(model, folder, quantization, n_out):
    """The ``nes2net.*`` metadata (:data:`~speechbrain_nes2net.pretrained.onnx_model.METADATA`)."""
    calibration = model.calibration.to_dict() if model.calibration is not None else None
    return {
        "nes2net.format": str(ONNX_FORMAT),
        "nes2net.score": "raw bona fide score (back-end logit), higher = more bona fide",
        "nes2net.eval_settings": json.dumps(dataclasses.asdict(model.settings)),
        "nes2net.calibration": json.dumps(calibration),
        "nes2net.decision": json.dumps(model.decision.to_dict()),
        "nes2net.n_out": str(int(n_out)),
        "nes2net.source_model": export_folder_digest(folder) if folder is not None else "live model",
        "nes2net.quantization": quantization,
    }  # fmt: skip


def _set_metadata(path, metadata):
    """Replaces the ``metadata_props`` of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _check_inputs(sample_rate, seed=0):
    """Two shapes other than the trace's: a padded batch of three, and one waveform."""
    generator = torch.Generator().manual_seed(seed)
    long = int(1.7 * sample_rate)
    three = 0.1 * torch.randn(3, long, generator=generator)
    lengths = torch.tensor([long, int(1.1 * sample_rate), int(0.6 * sample_rate)])
    three[1, lengths[1]:] = 0.5  # padding that must not matter
    three[2, lengths[2]:] = -0.5
    one = 0.1 * torch.randn(1, int(0.9 * sample_rate), generator=generator)
    return [(three, lengths), (one, torch.tensor([one.shape[1]]))]


def onnx_difference(path, model, threads=None):
    """Largest |onnxruntime - torch| bona fide score on the check inputs.

    The torch side is ``model``'s own scoring path, each padded row at its valid length.

    Arguments
    ---------
    path : str or Path
        The ONNX file.
    model : AntiSpoofModel
        The model it was exported from.
    threads : int, optional
        onnxruntime intra-op threads.

    Returns
    -------
    float
    """
    session = make_session(path, threads=threads)
    worst = 0.0
    for wavs, lengths in _check_inputs(model.sample_rate):
        got = session.run(["score"], {"waveform": wavs.numpy(), "lengths": lengths.numpy()})[0]
        expected = torch.cat(
            [model._forward_logits(wav[None, :count], None)[:, -1] for wav, count in zip(wavs, lengths)]
        )
        worst = max(worst, float((torch.from_numpy(got) - expected).abs().max()))
    return worst


def quantize_int8(source, target):
    """onnxruntime's dynamic int8 quantisation of the matrix products of an fp32 export.

    Weights of ``MatMul`` / ``Gemm`` nodes (over 90% of the MACs) become
    int8, activations are quantised on the fly; convolutions stay fp32
    (grouped convolutions have no integer kernel in onnxruntime). The
    metadata is kept, ``nes2net.quantization`` set to ``int8``.

    Arguments
    ---------
    source : str or Path
        An fp32 ONNX export.
    target : str or Path
        Where to write the quantised model.

    Returns
    -------
    Path
        ``target``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    props = {e.key: e.value for e in onnx.load(str(source), load_external_data=False).metadata_props}
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    props["nes2net.quantization"] = "int8"
    _set_metadata(target, props)
    return Path(target)


def export_onnx(model, output, quantize=None, opset=17, atol=DEFAULT_ATOL, check=True):
    """Exports an exported model folder (or a loaded AntiSpoofModel) as one ONNX file.

    Arguments
    ---------
    model : str, Path or AntiSpoofModel
        The model folder (``recipes/export.py``) or a loaded model.
    output : str or Path
        The ``.onnx`` file to write.
    quantize : str, optional
        'int8': write onnxruntime's dynamic int8 quantisation of the checked
        fp32 graph instead (see :func:`quantize_int8`).
    opset : int
        ONNX opset of the TorchScript-based exporter.
    atol : float
        Largest |onnxruntime - torch| fp32 score difference accepted.
    check : bool
        Run the check (on by default; off only to save time on a model
        checked before).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ExportError
        When the folder is not a model, the export fails, or onnxruntime does
        not reproduce the torch scores.
    """
    if quantize not in (None, "none", "int8"):
        raise ExportError(f"quantize={quantize!r} must be None or 'int8'")
    quantize = None if quantize == "none" else quantize
    model, folder = _load_model(model)
    previous = model.precision
    model.set_precision("fp32")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    graph = ScoringGraph(model.encoder, model.mods.classifier).eval()
    samples = model.sample_rate
    trace_inputs = (0.1 * torch.randn(2, int(1.3 * samples)), torch.tensor([int(1.3 * samples), samples]))
    staging = Path(tempfile.mkdtemp(prefix=".nes2net_onnx_", dir=output.parent))
    fp32_path = staging / "model.onnx"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer's notes on Python-side values and the exporter's deprecation notice.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, trace_inputs, str(fp32_path), dynamo=False, opset_version=opset,
                input_names=["waveform", "lengths"], output_names=["score", "logits"],
                dynamic_axes={
                    "waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                    "score": {0: "batch"}, "logits": {0: "batch"},
                },
            )  # fmt: skip
        with torch.no_grad():
            n_out = graph(*trace_inputs)[1].shape[1]
        _set_metadata(fp32_path, _metadata(model, folder, "none", n_out))
        if check:
            difference = onnx_difference(fp32_path, model)
            if not difference <= atol:
                raise ExportError(
                    f"onnxruntime does not reproduce the torch model: scores differ by "
                    f"{difference:.3g} (> {atol:g}); the graph would score otherwise than the model"
                )
            logger.info("ONNX export checked: max |onnxruntime - torch| = %.2g", difference)
        final = fp32_path
        if quantize == "int8":
            final = quantize_int8(fp32_path, staging / "model_int8.onnx")
        os.replace(final, output)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
        model.set_precision(previous)
    return output


def main(argv=None):
    """``nes2net-export-onnx``: returns the exit status (0 written, 2 usage or export error)."""
    parser = argparse.ArgumentParser(
        prog="nes2net-export-onnx",
        description="Export a speechbrain-nes2net model folder as one ONNX graph "
        "(waveform + lengths -> bona fide score), checked against torch.",
    )
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--quantize", choices=("none", "int8"), default="none",
        help="int8: onnxruntime dynamic quantisation of the matrix products (faster, scores move)",
    )  # fmt: skip
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL,
        help=f"largest accepted fp32 score difference to torch (default {DEFAULT_ATOL:g})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        print(
            f"nes2net-export-onnx: {err.name} is not installed; pip install 'speechbrain-nes2net[onnx]'",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        path = export_onnx(args.model, args.output, quantize=args.quantize, opset=args.opset,
                           atol=args.atol)  # fmt: skip
    except (ExportError, OSError) as err:
        print(f"nes2net-export-onnx: {err}", file=sys.stderr)
        return 2
    print(f"nes2net-export-onnx: wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
