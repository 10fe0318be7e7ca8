"""Scoring with an ONNX export on onnxruntime: :class:`OnnxAntiSpoofModel`.

The network runs in onnxruntime; everything around it (reading files, the
evaluation crop, windows, batching, calibration, decision) is the torch path's
code (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`), with the
settings the exporter wrote into the file's metadata (:data:`METADATA`)::

    model = OnnxAntiSpoofModel("model.onnx")
    model.score_file("x.flac")                  # calibrated LLR, higher = more bona fide
    model.score_files(paths, batch_size=8)      # FileScore per path; bad files reported

Authors
 * speechbrain-nes2net contributors
"""

import json

import torch

from speechbrain_nes2net.evaluation.calibration import DecisionRule, load_calibration
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.pretrained.scoring import FileScoring
from speechbrain_nes2net.scores import bonafide_scores

#: The ``metadata_props`` an export carries (docs/DEPLOYING.md): the layout version, what the
#: score is, the JSON evaluation settings, calibration (or null) and decision rule, the number
#: of logits, the source folder's digest, the quantisation (none or int8).
METADATA = ("nes2net.format", "nes2net.score", "nes2net.eval_settings", "nes2net.calibration",
            "nes2net.decision", "nes2net.n_out", "nes2net.source_model", "nes2net.quantization")
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
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return metadata_from_props({entry.key: entry.value for entry in proto.metadata_props}, path)


def metadata_from_props(props, path="the model"):
    """Decodes the ``nes2net.*`` entries of a ``metadata_props`` mapping; a ValueError for an
    ONNX file without them (not written by ``nes2net-export-onnx``) or of a newer layout.

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

    The scoring interface of :class:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel`
    (``score_file``, ``score_files``, ``score_batch``, ``logits_batch``), on
    the same code.

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
        self._use_settings(EvalSettings(**self.metadata["eval_settings"]).resolved())
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
