"""Scoring with an ONNX export on onnxruntime: :class:`OnnxAntiSpoofModel`.

No torch model is built: the network runs in onnxruntime, and everything
around it (reading and resampling files, the evaluation crop / repeat-padding,
long files by windows, batching, the calibration and the decision) is the
same code the torch path runs (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`),
with the settings the export wrote into the file's metadata
(:func:`read_metadata`; this module owns the layout, :data:`METADATA`, that the
exporter writes). Tensors are torch CPU tensors only as containers between
those helpers.

Example::

    from speechbrain_nes2net.pretrained.onnx_model import OnnxAntiSpoofModel
    model = OnnxAntiSpoofModel("model.onnx")
    model.score_file("x.flac")                  # calibrated LLR, higher = more bona fide
    model.score_files(paths, batch_size=8)      # FileScore per path; bad files reported

Authors
 * speechbrain-nes2net contributors
"""

import json

import torch

from speechbrain_nes2net.evaluation.calibration import DecisionRule, load_calibration
from speechbrain_nes2net.lobes.windows import forward_by_windows
from speechbrain_nes2net.pretrained.modules import (
    EvalSettings,
    prepare_waveforms,
)
from speechbrain_nes2net.pretrained.scoring import FileScoring
from speechbrain_nes2net.scores import bonafide_scores


#: The ``metadata_props`` an export carries (key -> meaning).
METADATA = {
    "nes2net.format": "version of this layout (1)",
    "nes2net.score": "what the score output is",
    "nes2net.eval_settings": "JSON: sample_rate, eval_samples, eval_min_samples, eval_window_seconds, window_seconds, window_hop_seconds",
    "nes2net.calibration": "JSON: {scale, offset, prior} mapping the raw score to an LLR, or null",
    "nes2net.decision": "JSON: the decision rule (bona fide when score >= threshold)",
    "nes2net.n_out": "number of back-end logits (1 or 2)",
    "nes2net.source_model": "SHA-256 fingerprint of the exported model folder",
    "nes2net.quantization": "none or int8 (dynamic quantisation of the matrix products)",
}
ONNX_FORMAT = 1
# Optional: "nes2net.calibration_files", the JSON [ID, label, SHA-256] rows of the files
# nes2net-calibrate fitted the decision on.


def read_metadata(path):
    """The ``nes2net.*`` metadata of an exported ONNX file, JSON values decoded.

    Arguments
    ---------
    path : str or Path
        An ONNX file written by ``nes2net-export-onnx``.

    Returns
    -------
    dict
        ``eval_settings``, ``decision`` (dicts), ``calibration`` (dict or
        None), ``n_out`` (int), ``source_model``, ``quantization``, ``format``.

    Raises
    ------
    ValueError
        For an ONNX file without them (not written by ``nes2net-export-onnx``)
        or of a newer layout.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    return metadata_from_props(props, path)


def metadata_from_props(props, path="the model"):
    """Decodes the ``nes2net.*`` entries of a ``metadata_props`` mapping (see :func:`read_metadata`).

    Example
    -------
    >>> props = {"nes2net.format": "1", "nes2net.score": "raw bona fide score",
    ...     "nes2net.eval_settings": '{"sample_rate": 16000}',
    ...     "nes2net.calibration": "null", "nes2net.decision": '{"threshold": -1.2}',
    ...     "nes2net.n_out": "1", "nes2net.source_model": "abc", "nes2net.quantization": "none"}
    >>> metadata_from_props(props)["decision"]
    {'threshold': -1.2}
    """
    missing = [key for key in METADATA if key not in props]
    if missing:
        raise ValueError(
            f"{path}: no {', '.join(missing)} metadata; score ONNX files written by "
            "nes2net-export-onnx (they carry the evaluation settings and the decision rule)"
        )
    if int(props["nes2net.format"]) > ONNX_FORMAT:
        raise ValueError(
            f"{path}: ONNX layout {props['nes2net.format']} is newer than this package reads "
            f"({ONNX_FORMAT}); upgrade speechbrain-nes2net"
        )
    return {
        "format": int(props["nes2net.format"]),
        "eval_settings": json.loads(props["nes2net.eval_settings"]),
        "calibration": json.loads(props["nes2net.calibration"]),
        "decision": json.loads(props["nes2net.decision"]),
        "n_out": int(props["nes2net.n_out"]),
        "source_model": props["nes2net.source_model"],
        "quantization": props["nes2net.quantization"],
    }


def make_session(path, threads=None, providers=None):
    """An onnxruntime ``InferenceSession`` for an export (all graph optimisations on).

    Arguments
    ---------
    path : str or Path
        The ONNX file.
    threads : int, optional
        Intra-op threads (default: onnxruntime's, one per physical core).
    providers : list of str, optional
        Execution providers (default: CPU; e.g. ``["CUDAExecutionProvider",
        "CPUExecutionProvider"]`` with onnxruntime-gpu).

    Returns
    -------
    onnxruntime.InferenceSession
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), options, providers=list(providers or ["CPUExecutionProvider"])
    )


class OnnxAntiSpoofModel(FileScoring):
    """Bona fide scores from a ``nes2net-export-onnx`` file, on onnxruntime.

    The same interface as :class:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel`
    for scoring (``score_file``, ``score_files``, ``score_batch``; labels at the
    shipped threshold, calibrated LLRs unless ``calibrated=False``), and the
    same handling of bad files, odd rates, multi-channel and long files.

    Arguments
    ---------
    path : str or Path
        The ONNX file.
    threads : int, optional
        onnxruntime intra-op threads.
    providers : list of str, optional
        onnxruntime execution providers (default CPU).
    """

    def __init__(self, path, threads=None, providers=None):
        self.path = str(path)
        self.session = make_session(path, threads, providers)
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = metadata_from_props(props, path)
        settings = EvalSettings(**self.metadata["eval_settings"]).resolved()
        self.sample_rate = settings.sample_rate
        self.num_samples = settings.eval_samples
        self.eval_samples = settings.eval_samples
        self.min_samples = settings.eval_min_samples
        window = settings.eval_window_seconds
        self.eval_window = None if not window else round(window * self.sample_rate)
        self.window_seconds = settings.window_seconds
        self.window_hop_seconds = settings.window_hop_seconds
        self.calibration = load_calibration(self.metadata["calibration"])
        #: The decision rule shipped with the model.
        self.decision = DecisionRule.from_dict(self.metadata["decision"])
        #: 'fp32' or 'int8' (the export's quantisation).
        self.precision = "int8" if self.metadata["quantization"] == "int8" else "fp32"

    def _forward_logits(self, wavs, wav_lens):
        """(batch, n_out) float32 logits of prepared, padded waveforms."""
        wavs = wavs.to(torch.float32).contiguous()
        if wav_lens is None:
            counts = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.int64)
        else:
            counts = torch.round(wav_lens.to(torch.float64) * wavs.shape[1]).to(torch.int64)
            counts = counts.clamp(min=1, max=wavs.shape[1])
        logits = self.session.run(
            ["logits"], {"waveform": wavs.cpu().numpy(), "lengths": counts.cpu().numpy()}
        )[0]
        return torch.from_numpy(logits).to(torch.float32)

    def _log_odds(self, logits):
        """(batch,) bona fide log-odds of the shipped decision rule (>= 0: bona fide)."""
        return self.decision.log_odds(bonafide_scores(logits))

    def logits_batch(self, wavs, wav_lens=None, preprocess=True, windows=True):
        """Raw logits (batch, n_out) of 16 kHz mono waveforms, as ``AntiSpoofModel.logits_batch``.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) waveforms at the model rate.
        wav_lens : torch.Tensor, optional
            Relative lengths.
        preprocess : bool
            Apply the evaluation preprocessing (crop / repeat-pad).
        windows : bool
            Score waveforms longer than ``eval_window_seconds`` by windows.

        Returns
        -------
        torch.Tensor
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        if preprocess:
            wavs, wav_lens = prepare_waveforms(wavs, wav_lens, self.num_samples, self.min_samples)
        window = self.eval_window if windows else None
        return forward_by_windows(self._forward_logits, wavs, wav_lens, window)

