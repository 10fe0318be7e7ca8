"""Exports trained and official Nes2Net models as self-contained SpeechBrain folders.

An export folder holds everything a model hub needs, with no absolute path and
no reference outside the folder (except the SSL model's hub id when the SSL
model was frozen in training)::

    hyperparams.yaml      modules, evaluation settings, calibration, pretrainer
    ssl.ckpt              SSL front-end weights (fine-tuned models only)
    aggregator.ckpt       layer aggregation weights
    backend.ckpt          back-end weights
    label_encoder.ckpt    spoof = 0, bonafide = 1
    custom_interface.py   one import line, for SpeechBrain's ``foreign_class``
    README.md             model card

and loads in a fresh process with stock SpeechBrain::

    from speechbrain.inference.classifiers import EncoderClassifier
    clf = EncoderClassifier.from_hparams(source="path/to/export", savedir="...")
    out_prob, score, index, label = clf.classify_file("x.flac")

or with :class:`speechbrain_nes2net.pretrained.interface.AntiSpoofModel` for bona fide
scores. Every loadable uses the pretrainer's default file name
(``<name>.ckpt`` in the source), because a relative ``paths:`` entry would be
resolved against the working directory, not the folder. The fine-tuned SSL
model is rebuilt from its configuration written inline in the YAML
(:class:`~speechbrain_nes2net.lobes.ssl.SSLFrontendFromConfig`) for the same
reason: the YAML is built before the pretrainer knows where the folder is.

Three entry points:

- :func:`export_run`: a training run folder (best, last or averaged
  checkpoints) -> export;
- :func:`convert_official_checkpoint`: a released official checkpoint
  (github.com/Liu-Tianchi/Nes2Net, .../Nes2Net_ASVspoof_ITW) -> export;
- :func:`write_export`: live modules + how to rebuild them -> export (both of
  the above end here). It checks that the YAML rebuilds the same modules and,
  by default, that the written folder reproduces the modules' scores.

Authors
 * speechbrain-nes2net contributors
"""

import datetime
import importlib
import json
import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer, average_checkpoints

from speechbrain_nes2net.audio import DEFAULT_SAMPLE_RATE
from speechbrain_nes2net.evaluation.calibration import ScoreCalibration
from speechbrain_nes2net.lobes.ssl import SSLFrontend
from speechbrain_nes2net.official.backend import (
    AGGREGATOR_PREFIX,
    AGGREGATORS,
    BACKEND_PREFIX,
    aggregator_from_official,
    backend_from_official,
    official_backend_kwargs,
)
from speechbrain_nes2net.official.frontend import (
    OFFICIAL_PREFIXES,
    OfficialCheckpointError,
    frontend_from_official,
    hf_config_from_official,
)
from speechbrain_nes2net.pretrained.interface import (
    LABELS,
    AntiSpoofEncoder,
    AntiSpoofHead,
    LabelEncoder,
)

logger = logging.getLogger(__name__)

#: Files the pretrainer loads, by loadable name (its default ``<name>.ckpt``).
WEIGHT_FILES = ("ssl", "aggregator", "backend")

#: Configuration of the released SSL models as the official code loads them:
#: s3prl's WavLM-Large (CtrSVDD) and fairseq's XLS-R 300M (ASVspoof, ITW).
WAVLM_LARGE_CONFIG = {
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "activation_fn": "gelu",
    "layer_norm_first": True,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "normalize": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
}
XLSR_300M_CONFIG = {
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "activation_fn": "gelu",
    "layer_norm_first": True,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
}
#: The SSL model each official back-end name was released with.
OFFICIAL_SSL = {
    "WavLM": ("s3prl_wavlm", WAVLM_LARGE_CONFIG, "microsoft/wavlm-large"),
    "wav2vec2": ("fairseq_wav2vec2", XLSR_300M_CONFIG, "facebook/wav2vec2-xls-r-300m"),
}
#: Official aggregator names -> names of
#: :func:`~speechbrain_nes2net.lobes.aggregation.build_aggregator`.
AGGREGATOR_NAMES = {"WavLM_SEA": "SEA", "WavLM_WeightedSum": "weighted_sum", "WavLM_AttM": "AttM"}
# The key that tells each official aggregator apart (after AGGREGATOR_PREFIX).
_AGGREGATOR_MARKERS = {
    "fc_att_merge.0.weight": "WavLM_SEA",
    "weight_hidd": "WavLM_WeightedSum",
    "W": "WavLM_AttM",
}

#: Licences of the SSL models the recipes use (the exported weights derive from them).
SSL_LICENCES = {
    "microsoft/wavlm-large": (
        "mit",
        (
            "WavLM-Large (microsoft/wavlm-large), released by Microsoft under the MIT licence "
            "(github.com/microsoft/unilm)"
        ),
    ),
    "facebook/wav2vec2-xls-r-300m": (
        "apache-2.0",
        (
            "wav2vec 2.0 XLS-R 300M (facebook/wav2vec2-xls-r-300m), released by Meta AI under "
            "the Apache 2.0 licence"
        ),
    ),
}

_CUSTOM_INTERFACE = '''"""Interface for speechbrain.inference.interfaces.foreign_class.

The class lives in the installed package (pip install speechbrain-nes2net):
    foreign_class(source, pymodule_file="custom_interface.py", classname="AntiSpoofModel")
"""

from speechbrain_nes2net.pretrained.interface import AntiSpoofModel  # noqa: F401
'''


class ExportError(ValueError):
    """A model that cannot be exported as asked, with what to change."""


# ------------------------------------------------------------ module specs


@dataclass(frozen=True)
class ModuleSpec:
    """How ``hyperparams.yaml`` rebuilds a module: ``!new:`` or ``!apply:`` with plain arguments.

    Arguments
    ---------
    target : str
        Dotted path of the class (``!new:``) or factory function (``!apply:``),
        importable from an installed package.
    kwargs : dict
        Keyword arguments (plain YAML data: numbers, strings, booleans, null,
        lists, mappings).
    args : list
        Positional arguments (used instead of ``kwargs`` when given).
    kind : str
        'new' or 'apply'.

    Example
    -------
    >>> spec = ModuleSpec("speechbrain_nes2net.lobes.aggregation.SEA", {"num_layers": 3})
    >>> spec.build()
    SEA(...)
    >>> print(spec.to_yaml("aggregator"))
    aggregator: !new:speechbrain_nes2net.lobes.aggregation.SEA
        num_layers: 3
    """

    target: str
    kwargs: dict = field(default_factory=dict)
    args: list = None
    kind: str = "new"

    def __post_init__(self):
        if self.kind not in ("new", "apply"):
            raise ValueError(f"kind must be 'new' or 'apply', got {self.kind!r}")
        if self.args is not None and self.kwargs:
            raise ValueError("give either positional args or kwargs, not both")

    def resolve(self):
        """Imports the class or function."""
        module_name, _, name = self.target.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ExportError(
                f"{self.target} cannot be imported ({err}); exported modules must come "
                "from an installed package"
            ) from None

    def build(self):
        """Builds the module as hyperpyyaml would."""
        target = self.resolve()
        return target(*self.args) if self.args is not None else target(**self.kwargs)

    def to_yaml(self, key):
        """The YAML entry ``key: !<kind>:<target>`` with its arguments."""
        head = f"{key}: !{self.kind}:{self.target}"
        if self.args is not None:
            return f"{head} {_flow(list(self.args))}"
        if not self.kwargs:
            return f"{head} {{}}"
        return "\n".join([head] + _block(self.kwargs, 1))

    @classmethod
    def from_yaml_node(cls, node, what):
        """Reads a ``!new:`` / ``!apply:`` node of a round-trip-loaded YAML.

        Arguments
        ---------
        node : ruamel.yaml node
            The tagged mapping or sequence.
        what : str
            Its place in the file, for error messages.

        Returns
        -------
        ModuleSpec
        """
        tag = getattr(getattr(node, "tag", None), "value", None)
        match = re.fullmatch(r"!(new|apply):([\w.]+)", tag or "")
        if not match:
            raise ExportError(
                f"{what} is built with tag {tag!r}; an export can only rebuild modules "
                "declared as '!new:<class>' or '!apply:<function>' with plain arguments"
            )
        kind, target = match.groups()
        if isinstance(node, dict):
            kwargs = {str(key): _plain(value, f"{what}.{key}") for key, value in node.items()}
            return cls(target, kwargs, kind=kind)
        if isinstance(node, list):
            args = [_plain(value, f"{what}[{index}]") for index, value in enumerate(node)]
            return cls(target, {}, args=args, kind=kind)
        raise ExportError(f"{what}: {tag} must take a mapping or a list of arguments")


def _plain(value, what):
    """Turns round-trip YAML data into plain Python, refusing tagged objects."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag is not None:
        raise ExportError(
            f"{what} has an argument built with {tag}; an export needs plain values "
            "(numbers, strings, booleans, null, lists, mappings)"
        )
    if isinstance(value, dict):
        return {str(key): _plain(item, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{what}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise ExportError(f"{what}: value {value!r} of type {type(value).__name__} is not plain data")


# -------------------------------------------------------------- YAML writing

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}


def _key(key):
    key = str(key)
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _RESERVED:
        return key
    return json.dumps(key)


def _scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"  # YAML needs the dot to read a float
        return text
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to YAML")


def _flow(value):
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    return _scalar(value)


def _block(mapping, depth):
    """Block-style lines of a mapping (4-space indents, lists in flow style)."""
    pad = "    " * depth
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{_key(key)}:")
            lines.extend(_block(value, depth + 1))
        else:
            lines.append(f"{pad}{_key(key)}: {_flow(value)}")
    return lines


# -------------------------------------------------------------------- SSL


def _ssl_config_dict(frontend):
    """The JSON-safe transformers configuration of an :class:`SSLFrontend`."""
    config = json.loads(frontend.ssl.model.config.to_json_string(use_diff=False))
    for bookkeeping in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        config.pop(bookkeeping, None)
    return config


def _ssl_yaml(frontend, hub_id):
    """The ``ssl:`` entry: from the hub when ``hub_id`` is set, else from the inline config."""
    normalize = bool(frontend.normalize)
    if hub_id is not None:
        return "\n".join(
            [
                "ssl: !new:speechbrain_nes2net.lobes.ssl.SSLFrontend",
                f"    source: {_scalar(hub_id)}",
                "    save_path: !apply:speechbrain_nes2net.lobes.ssl.hf_cache_dir []",
                "    freeze: true",
                f"    normalize: {_scalar(normalize)}",
            ]
        )
    config = _ssl_config_dict(frontend)
    model_type = config.pop("model_type")
    return "\n".join(
        [
            "ssl: !new:speechbrain_nes2net.lobes.ssl.SSLFrontendFromConfig",
            f"    model_type: {_scalar(model_type)}",
            f"    normalize: {_scalar(normalize)}",
            "    freeze: true",
            "    config:",
        ]
        + _block(config, 2)
    )


def _is_local(source):
    source = str(source)
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


# ------------------------------------------------------------------ export


@dataclass
class EvalSettings:
    """How the exported model reads its input (stored in ``hyperparams.yaml``).

    Arguments
    ---------
    sample_rate : int
        Model rate.
    eval_samples : int, optional
        Score the first ``eval_samples`` samples (repeat-padded); the full
        utterance when None.
    eval_min_samples : int
        Repeat-pad shorter full utterances to this many samples.
    eval_window_seconds : float, optional
        Longer waveforms are scored by consecutive windows of this length
        and get the mean of their logits, as ``AntiSpoofBrain`` evaluates
        long test files (None: always whole).
    window_seconds : float, optional
        Default window of :meth:`AntiSpoofModel.score_windows` (default:
        the ``eval_samples`` length, else 4 s).
    window_hop_seconds : float, optional
        Its hop (default: half a window).
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    eval_samples: int = None
    eval_min_samples: int = 0
    eval_window_seconds: float = 60.0
    window_seconds: float = None
    window_hop_seconds: float = None

    def resolved(self):
        """The settings with the window defaults filled in."""
        window = self.window_seconds
        if window is None:
            window = self.eval_samples / self.sample_rate if self.eval_samples else 4.0
        hop = self.window_hop_seconds if self.window_hop_seconds is not None else window / 2
        return EvalSettings(
            int(self.sample_rate),
            None if self.eval_samples is None else int(self.eval_samples),
            int(self.eval_min_samples or 0),
            float(self.eval_window_seconds) if self.eval_window_seconds else None,
            float(window),
            float(hop),
        )


def _calibration_dict(calibration):
    if calibration is None:
        return None
    if isinstance(calibration, ScoreCalibration):
        return calibration.to_dict()
    if isinstance(calibration, (str, Path)):
        calibration = json.loads(Path(calibration).read_text())
    return ScoreCalibration.from_dict(calibration).to_dict()


def _hyperparams_text(ssl_entry, aggregator_spec, backend_spec, settings, calibration, header):
    calibration_text = "null" if calibration is None else _flow(calibration)
    return f"""{header}
# Input: any audio; read as {settings.sample_rate} Hz mono (channels averaged, resampled).
sample_rate: {settings.sample_rate}
eval_samples: {_scalar(settings.eval_samples)}   # first N samples, repeat-padded (null: all)
eval_min_samples: {settings.eval_min_samples}   # shorter full utterances are repeat-padded to this
eval_window_seconds: {_scalar(settings.eval_window_seconds)}   # longer: mean logits of windows
window_seconds: {_scalar(settings.window_seconds)}   # AntiSpoofModel.score_windows defaults
window_hop_seconds: {_scalar(settings.window_hop_seconds)}

# Scores: higher = more bona fide; the raw score is the back-end's bona fide
# logit. A calibration maps it to a log-likelihood ratio: scale * score + offset.
calibration: {calibration_text}

# Model --------------------------------------------------------------------
{ssl_entry}

{aggregator_spec.to_yaml("aggregator")}

{backend_spec.to_yaml("backend")}

# EncoderClassifier slots ---------------------------------------------------
compute_features: !new:speechbrain_nes2net.pretrained.interface.MonoWaveforms
mean_var_norm: !new:speechbrain_nes2net.pretrained.interface.PassThrough
embedding_model: !new:speechbrain_nes2net.pretrained.interface.AntiSpoofEncoder
    ssl: !ref <ssl>
    aggregator: !ref <aggregator>
    backend: !ref <backend>
    num_samples: !ref <eval_samples>
    min_samples: !ref <eval_min_samples>
    window_seconds: !ref <eval_window_seconds>
    sample_rate: !ref <sample_rate>
classifier: !new:speechbrain_nes2net.pretrained.interface.AntiSpoofHead
    backend: !ref <backend>

label_encoder: !new:speechbrain_nes2net.pretrained.interface.LabelEncoder
audio_normalizer: !new:speechbrain_nes2net.pretrained.interface.AudioNormalizer
    sample_rate: !ref <sample_rate>

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

# Every file is found as <source>/<name>.ckpt (no paths: they would be
# resolved against the working directory).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
{_loadables_text(ssl_entry)}
"""


def _loadables_text(ssl_entry):
    names = ["aggregator", "backend", "label_encoder"]
    if "SSLFrontendFromConfig" in ssl_entry:
        names.insert(0, "ssl")
    return "\n".join(f"        {name}: !ref <{name}>" for name in names)


def _check_spec(spec, module, what):
    """Checks that ``spec`` rebuilds ``module``: same structure, parameter names and shapes."""
    rebuilt = spec.build()
    if type(rebuilt) is not type(module) or repr(rebuilt) != repr(module):
        raise ExportError(
            f"the {what} spec {spec.target} builds\n{rebuilt!r}\nbut the module to export is\n"
            f"{module!r}"
        )
    try:
        rebuilt.load_state_dict(module.state_dict(), strict=True)
    except RuntimeError as err:
        raise ExportError(f"the {what} spec does not match the module's weights: {err}") from None


def _check_no_absolute_paths(text, what):
    found = re.findall(r"""["'\s:](/[\w.\-]+/[\w./\-]*|~/[\w./\-]*|[A-Za-z]:\\[^\s"']*)""", text)
    if found:
        raise ExportError(
            f"{what} would contain absolute paths {sorted(set(found))[:5]}; an export folder "
            "must be relocatable"
        )


def write_export(
    folder,
    ssl,
    aggregator,
    backend,
    aggregator_spec,
    backend_spec,
    settings=None,
    ssl_hub_id=None,
    calibration=None,
    card=None,
    overwrite=False,
    verify=True,
):
    """Writes live modules as an export folder.

    Arguments
    ---------
    folder : str or Path
        Output folder (must not exist unless ``overwrite``).
    ssl : SSLFrontend
        The SSL front-end with its final weights.
    aggregator, backend : torch.nn.Module
        The layer aggregation and the back-end with their final weights.
    aggregator_spec, backend_spec : ModuleSpec
        How the YAML rebuilds them (checked against the modules).
    settings : EvalSettings, optional
        Input settings; defaults to full utterances at 16 kHz.
    ssl_hub_id : str, optional
        Reference the SSL model by this hub id instead of storing its weights
        (only right when it was frozen in training: the check below compares
        the hub model's scores with the live one's).
    calibration : ScoreCalibration, dict or path, optional
        Score calibration (``ScoreCalibration.to_dict()`` or a JSON file of it).
    card : dict, optional
        Model card facts (see :func:`model_card`).
    overwrite : bool
        Replace an existing folder.
    verify : bool
        Load the written folder with :class:`AntiSpoofModel` and check that it
        reproduces the live modules' logits.

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ExportError(f"{folder} exists and is not empty; pass overwrite=True to replace it")
    if not isinstance(ssl, SSLFrontend):
        raise ExportError(
            f"the SSL front-end must be a speechbrain_nes2net.lobes.ssl.SSLFrontend, got "
            f"{type(ssl).__name__}"
        )
    settings = (settings or EvalSettings()).resolved()
    calibration = _calibration_dict(calibration)
    _check_spec(aggregator_spec, aggregator, "aggregator")
    _check_spec(backend_spec, backend, "backend")
    AntiSpoofHead(backend)  # fails early for a back-end without an output layer

    card = dict(card or {})
    header = "\n".join(
        [
            "# " + "#" * 76,
            f"# {card.get('title', 'SSL + Nes2Net anti-spoofing model')}",
            "# Exported by speechbrain_nes2net.pretrained.export on "
            + datetime.date.today().isoformat()
            + "; see README.md.",
            "# Loads with speechbrain.inference.classifiers.EncoderClassifier (label",
            "# 'bonafide' / 'spoof') and speechbrain_nes2net.pretrained.interface.AntiSpoofModel.",
            "# " + "#" * 76,
        ]
    )
    text = _hyperparams_text(
        _ssl_yaml(ssl, ssl_hub_id), aggregator_spec, backend_spec, settings, calibration, header
    )
    _check_no_absolute_paths(text, "hyperparams.yaml")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    try:
        (staging / "hyperparams.yaml").write_text(text, encoding="utf-8")
        modules = {"aggregator": aggregator, "backend": backend}
        if ssl_hub_id is None:
            modules["ssl"] = ssl
        for name, module in modules.items():
            state = {
                key: value.detach().cpu().clone() for key, value in module.state_dict().items()
            }
            torch.save(state, staging / f"{name}.ckpt")
        encoder = LabelEncoder()
        encoder.update_from_iterable(LABELS)
        encoder.save(staging / "label_encoder.ckpt")
        (staging / "custom_interface.py").write_text(_CUSTOM_INTERFACE, encoding="utf-8")
        card_text = model_card(
            card,
            ssl=ssl,
            ssl_hub_id=ssl_hub_id,
            aggregator_spec=aggregator_spec,
            backend_spec=backend_spec,
            backend=backend,
            settings=settings,
            calibration=calibration,
        )
        _check_no_absolute_paths(card_text, "README.md")
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        if verify:
            verify_export(staging, ssl, aggregator, backend, settings)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported model -> %s", folder)
    return folder


def verify_export(folder, ssl, aggregator, backend, settings, atol=1e-5):
    """Loads an export and checks that it reproduces the live modules.

    Arguments
    ---------
    folder : str or Path
        The export folder.
    ssl, aggregator, backend : torch.nn.Module
        The modules that were exported.
    settings : EvalSettings
        The exported input settings.
    atol : float
        Tolerance on the logits (relative tolerance 1e-5 as well).

    Raises
    ------
    ExportError
        If the folder does not load or scores differently.
    """
    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, int(1.3 * settings.sample_rate), generator=generator)
    lengths = torch.tensor([1.0, 0.7])
    reference = AntiSpoofEncoder(
        ssl,
        aggregator,
        backend,
        settings.eval_samples,
        settings.eval_min_samples,
        settings.eval_window_seconds,
        settings.sample_rate,
    )
    training = [module.training for module in (ssl, aggregator, backend)]
    reference.eval()
    device = next(iter(backend.parameters())).device  # the modules may sit on a GPU
    try:
        with torch.no_grad():
            embeddings = reference(wavs.to(device), lengths.to(device))
            expected = AntiSpoofHead(backend).logits(embeddings).cpu()
    finally:
        for module, mode in zip((ssl, aggregator, backend), training):
            module.train(mode)
    with tempfile.TemporaryDirectory(prefix="nes2net_verify_") as savedir:
        try:
            model = AntiSpoofModel.from_hparams(
                source=str(folder), savedir=savedir, run_opts={"device": "cpu"}
            )
        except Exception as err:  # any loading failure means a broken export
            raise ExportError(f"the export in {folder} does not load: {err}") from err
        got = model.logits_batch(wavs, lengths)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=1e-5):
        raise ExportError(
            f"the export does not reproduce the model: logits {got.tolist()} instead of "
            f"{expected.tolist()}"
        )


# -------------------------------------------------------------- model card


def _spec_arguments(spec):
    return _flow(spec.args if spec.args is not None else spec.kwargs)


def _licence(ssl_hub_id, ssl_source_note):
    if ssl_hub_id in SSL_LICENCES:
        return SSL_LICENCES[ssl_hub_id]
    return (
        "other",
        f"the SSL front-end ({ssl_source_note}): check its licence before redistributing",
    )


def _metrics_table(metrics):
    lines = ["| set | EER (%) | minDCF | trials (bona fide / spoof) |", "|---|---|---|---|"]
    for name, values in metrics.items():
        eer = values.get("eer")
        eer_text = "-" if eer is None else f"{100 * eer:.2f}"
        dcf = values.get("min_dcf")
        dcf_text = "-" if dcf is None else f"{dcf:.4f}"
        counts = "-"
        if values.get("n_bonafide") is not None:
            counts = f"{values['n_bonafide']} / {values['n_spoof']}"
        lines.append(f"| {name} | {eer_text} | {dcf_text} | {counts} |")
    return "\n".join(lines)


def model_card(
    card, ssl, ssl_hub_id, aggregator_spec, backend_spec, backend, settings, calibration
):
    """The README.md of an export (front matter for model hubs, then the card).

    Arguments
    ---------
    card : dict
        Facts known to the caller, all optional: ``title``, ``description``,
        ``ssl_source`` (hub id or a note), ``ssl_fine_tuned`` (bool),
        ``training`` (dict of settings), ``data`` (dict: train / dev / test
        descriptions), ``metrics`` (set name -> metrics dict with ``eer`` as
        a fraction, ``min_dcf``, ``n_bonafide``, ``n_spoof``),
        ``metrics_note``, ``origin`` (where the weights come from),
        ``licence_note``.
    ssl, backend : torch.nn.Module
        The exported front-end and back-end.
    ssl_hub_id : str or None
        Hub id the SSL model is referenced by (frozen models).
    aggregator_spec, backend_spec : ModuleSpec
        The exported module specs.
    settings : EvalSettings
        The exported input settings.
    calibration : dict or None
        The exported calibration.

    Returns
    -------
    str
    """
    ssl_source = card.get("ssl_source") or ssl_hub_id or "a local SSL model"
    licence_id, licence_text = _licence(card.get("ssl_hub_id", ssl_hub_id), ssl_source)
    if card.get("licence_note"):
        licence_text = card["licence_note"]
    config = ssl.ssl.model.config
    n_params = sum(p.numel() for p in backend.parameters())
    fine_tuned = card.get("ssl_fine_tuned", ssl_hub_id is None)
    stored = (
        f"referenced by its hub id `{ssl_hub_id}` (frozen in training; downloaded on first use)"
        if ssl_hub_id is not None
        else "stored in this folder (`ssl.ckpt`, "
        + ("fine-tuned" if fine_tuned else "as trained")
        + "; its configuration is written inline in `hyperparams.yaml`)"
    )
    if settings.eval_samples:
        eval_text = (
            f"its first {settings.eval_samples} samples "
            f"({settings.eval_samples / settings.sample_rate:g} s), repeat-padded when shorter"
        )
    else:
        eval_text = "the full utterance" + (
            f", repeat-padded to {settings.eval_min_samples} samples when shorter"
            if settings.eval_min_samples
            else ""
        )
    if settings.eval_window_seconds is not None:
        eval_text += (
            f"; a waveform longer than {settings.eval_window_seconds:g} s is cut into windows "
            "of that length and gets the mean of their logits"
        )
    title = card.get("title", "SSL + Nes2Net anti-spoofing model")
    lines = [
        "---",
        "library_name: speechbrain",
        f"license: {licence_id}",
        "pipeline_tag: audio-classification",
        "tags:",
        "- speechbrain",
        "- anti-spoofing",
        "- audio-deepfake-detection",
        "- nes2net",
        "---",
        "",
        f"# {title}",
        "",
        card.get(
            "description",
            "Bona fide vs spoofed speech detection: a self-supervised speech model "
            "front-end, a layer aggregation and a Nes2Net back-end, trained with "
            "speechbrain-nes2net.",
        ),
        "",
        "## Usage",
        "",
        "With SpeechBrain alone (`pip install speechbrain speechbrain-nes2net`; the model",
        "classes come from the installed package):",
        "",
        "```python",
        "from speechbrain.inference.classifiers import EncoderClassifier",
        'clf = EncoderClassifier.from_hparams(source="<folder or hub id>", savedir="pretrained")',
        'out_prob, score, index, label = clf.classify_file("x.flac")  # label: bonafide | spoof',
        "bonafide_log_odds = out_prob[..., 1] - out_prob[..., 0]",
        "```",
        "",
        "Bona fide scores (calibrated when the folder carries a calibration), long files in",
        "windows, many files at once:",
        "",
        "```python",
        "from speechbrain_nes2net.pretrained.interface import AntiSpoofModel",
        'model = AntiSpoofModel.from_hparams(source="<folder or hub id>", savedir="pretrained")',
        'model.score_file("x.flac")           # float, higher = more bona fide',
        'model.score_windows("long.wav")      # per-window scores and their mean',
        "```",
        "",
        "Command line: `nes2net-score --model <this folder> --output scores.txt audio_dir/`.",
        "",
        "## Model",
        "",
        f"- SSL front-end: {ssl_source} (`{config.model_type}`, {config.num_hidden_layers} "
        f"layers, {config.hidden_size} dims), {stored}; input "
        + ("layer-normalised per waveform" if ssl.normalize else "fed as raw waveforms")
        + ".",
        f"- Layer aggregation: `{aggregator_spec.target}` {_spec_arguments(aggregator_spec)}.",
        (
            f"- Back-end: `{backend_spec.target}` {_spec_arguments(backend_spec)}, "
            f"{n_params:,} parameters."
        ),
        (
            f"- Input: {settings.sample_rate} Hz mono (other rates are resampled, channels "
            f"averaged); each file is scored on {eval_text}."
        ),
        "",
        "## Score convention",
        "",
        (
            "Higher = more bona fide. The raw score is the back-end's bona fide logit "
            "(one-logit models: the bona fide log-odds; two-logit models: logit index 1, the "
            "official ASVspoof scoring). `EncoderClassifier` returns log-posteriors "
            "`[log P(spoof), log P(bonafide)]` and the label of the larger one."
        ),
        "",
    ]
    if calibration is not None:
        lines += [
            (
                "Calibration (shipped in `hyperparams.yaml`): `LLR = "
                f"{calibration['scale']:.6g} * score + {calibration['offset']:.6g}` "
                f"(fitted with bona fide prior {calibration['prior']:g}); `AntiSpoofModel` "
                "returns the LLR, `calibrated=False` the raw score."
            ),
            "",
        ]
    else:
        lines += ["No calibration is shipped: scores are raw (not log-likelihood ratios).", ""]
    if card.get("origin"):
        lines += ["## Origin", "", card["origin"], ""]
    if card.get("data"):
        lines += ["## Training data", ""]
        lines += [f"- {key}: {value}" for key, value in card["data"].items()]
        lines.append("")
    if card.get("training"):
        lines += ["## Training settings", ""]
        lines += [f"- {key}: {value}" for key, value in card["training"].items()]
        lines.append("")
    if card.get("metrics"):
        lines += ["## Results", "", _metrics_table(card["metrics"]), ""]
        if card.get("metrics_note"):
            lines += [card["metrics_note"], ""]
    lines += [
        "## Licence",
        "",
        (
            f"The weights derive from {licence_text}. The speechbrain-nes2net code is "
            "released under the Apache 2.0 licence."
        ),
        "",
        "## Files",
        "",
        "`hyperparams.yaml` (modules and settings), "
        + ("`ssl.ckpt`, " if ssl_hub_id is None else "")
        + "`aggregator.ckpt`, `backend.ckpt`, `label_encoder.ckpt` (spoof = 0, bonafide = 1), "
        "`custom_interface.py` (for `foreign_class`), this card.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------- from a run


def _load_run_yaml(run_folder, overrides):
    path = Path(run_folder) / "hyperparams.yaml"
    if not path.is_file():
        raise ExportError(
            f"{run_folder} is not a training run folder: no hyperparams.yaml (the copy "
            "recipes/train.py writes into output_folder)"
        )
    import ruamel.yaml

    text = path.read_text(encoding="utf-8")
    raw = ruamel.yaml.YAML(typ="rt").load(text)
    modules = raw.get("modules") if isinstance(raw, dict) else None
    if not isinstance(modules, dict) or not {"ssl", "aggregator", "backend"} <= set(modules):
        raise ExportError(
            f"{path}: 'modules' must hold ssl, aggregator and backend (the AntiSpoofBrain modules)"
        )
    specs = {
        name: ModuleSpec.from_yaml_node(modules[name], f"{path.name}: modules.{name}")
        for name in ("aggregator", "backend")
    }
    hparams = load_hyperpyyaml(text, overrides or {})
    return hparams, specs, raw


def select_checkpoints(checkpoints_dir, checkpoint="best", average=1, metric="EER", strict=True):
    """The checkpoint(s) of a run to export.

    Arguments
    ---------
    checkpoints_dir : str or Path
        The run's checkpoint folder (``save_folder``).
    checkpoint : str
        'best' (lowest ``metric``, as the recipe's test evaluation picks),
        'last', or the path / name of a ``CKPT+...`` folder.
    average : int
        Number of checkpoints to average (the best / last ``average``).
    metric : str
        Validation statistic of 'best' (lower is better).
    strict : bool
        Fewer checkpoints than ``average`` is an error; otherwise the
        available ones are averaged with a warning, as ``AntiSpoofBrain`` does.

    Returns
    -------
    list of speechbrain.utils.checkpoints.Checkpoint
    """
    if average < 1:
        raise ExportError(f"average must be at least 1, got {average}")
    checkpointer = Checkpointer(checkpoints_dir)
    if checkpoint == "best":
        found = checkpointer.find_checkpoints(min_key=metric, max_num_checkpoints=average)
    elif checkpoint == "last":
        found = checkpointer.find_checkpoints(max_num_checkpoints=average)
    else:
        wanted = Path(checkpoint).name
        found = [ckpt for ckpt in checkpointer.list_checkpoints() if ckpt.path.name == wanted]
        if average != 1:
            raise ExportError("average only applies to checkpoint='best' or 'last'")
    if not found:
        available = [ckpt.path.name for ckpt in checkpointer.list_checkpoints()]
        raise ExportError(
            f"no checkpoint {checkpoint!r} (metric {metric!r}) in {checkpoints_dir}; "
            f"available: {available}"
        )
    if len(found) < average:
        if strict:
            raise ExportError(
                f"asked to average {average} checkpoints but {checkpoints_dir} holds {len(found)}"
            )
        logger.warning("Averaging %d checkpoints instead of %d", len(found), average)
    return found


def _load_checkpoint_weights(modules, checkpoints):
    for name in WEIGHT_FILES:
        missing = [str(ckpt.path) for ckpt in checkpoints if name not in ckpt.paramfiles]
        if missing:
            raise ExportError(f"checkpoints {missing} have no {name}.ckpt")
        if len(checkpoints) == 1:
            state = torch.load(checkpoints[0].paramfiles[name], map_location="cpu")
        else:
            state = average_checkpoints(checkpoints, name)
        modules[name].load_state_dict(state, strict=True)


def _eval_samples_of(hparams, test_set):
    specs = hparams.get("test_sets") or {}
    if test_set is not None:
        if test_set not in specs:
            raise ExportError(
                f"test_set={test_set!r} is not in the run's test_sets {sorted(specs)}"
            )
        return specs[test_set].get("eval_samples")
    values = {spec.get("eval_samples") for spec in specs.values()}
    if len(values) == 1:
        return values.pop()
    if values:
        logger.warning(
            "The test sets use different eval_samples %s: exporting full-utterance scoring; "
            "pass test_set= or eval_samples= to choose",
            sorted(values, key=str),
        )
    return None


def _run_card(hparams, specs, run_folder, checkpoints, checkpoint, average, metric, ssl, hub_id):
    """Model card facts of a training run (relative names only)."""
    describe = hparams.get
    training = {
        "epochs": describe("number_of_epochs"),
        "back-end learning rate": describe("lr_backend"),
        "SSL learning rate": None if hparams.get("freeze_ssl") else describe("lr_ssl"),
        "SSL frozen": bool(hparams.get("freeze_ssl", False)),
        "loss": type(hparams["loss"]).__name__ if "loss" in hparams else None,
        "batch size": (hparams.get("train_dataloader_options") or {}).get("batch_size"),
        "training crop (samples)": describe("train_samples"),
        "augmentation": (
            type(hparams["waveform_augment"]).__name__
            if hparams.get("waveform_augment") is not None
            else "none"
        ),
        "seed": describe("seed"),
        "checkpoint": (
            f"{checkpoint}"
            + (f", average of {average}" if average > 1 else "")
            + f" (selection metric: dev {metric})"
        ),
    }
    data = {"train": hparams.get("train_data"), "dev": hparams.get("valid_data")}
    for name, spec in (hparams.get("test_sets") or {}).items():
        samples = spec.get("eval_samples")
        data[f"test {name}"] = spec.get("data") + (
            f" (first {samples} samples)" if samples else " (full utterances)"
        )
    metrics = {}
    meta = checkpoints[0].meta if len(checkpoints) == 1 else {}
    if meta:
        metrics["dev (selected checkpoint)"] = {
            "eer": meta["EER"] / 100 if meta.get("EER") is not None else None,
            "min_dcf": meta.get("minDCF"),
        }
    note = None
    scores = Path(run_folder) / "scores"
    test_metrics = sorted(scores.glob("*_metrics.json")) if scores.is_dir() else []
    run_choice = metric == hparams.get("selection_metric", "EER")
    run_choice = run_choice and average == int(hparams.get("average_checkpoints", 1) or 1)
    if test_metrics and checkpoint == "best" and run_choice:
        for path in test_metrics:
            values = json.loads(path.read_text())
            metrics[values.get("test_set", path.stem[: -len("_metrics")])] = values
        note = "Test metrics as computed by the training run with this checkpoint."
    elif test_metrics:
        note = (
            "The training run's test metrics were computed with the checkpoint it selected, "
            "not with these weights; they are left out."
        )
    source = getattr(ssl.ssl.model.config, "name_or_path", "") or ""
    ssl_note = hub_id or (
        source if source and not _is_local(source) else "a local SSL model folder"
    )
    return {
        "title": f"SSL + {specs['backend'].target.rsplit('.', 1)[-1]} anti-spoofing model",
        "origin": f"Trained with speechbrain-nes2net (run `{Path(run_folder).name}`).",
        "ssl_source": ssl_note,
        "ssl_hub_id": hub_id or (source if source and not _is_local(source) else None),
        "ssl_fine_tuned": not bool(hparams.get("freeze_ssl", False)),
        "training": {k: v for k, v in training.items() if v is not None},
        "data": {k: v for k, v in data.items() if v is not None},
        "metrics": metrics,
        "metrics_note": note,
    }


_UNSET = object()


def export_run(
    run_folder,
    export_folder,
    checkpoint="best",
    average=None,
    metric=None,
    test_set=None,
    eval_samples=_UNSET,
    calibration=None,
    ssl_hub_id=None,
    window_seconds=None,
    window_hop_seconds=None,
    overrides=None,
    overwrite=False,
    verify=True,
):
    """Exports a training run of ``recipes/train.py`` as a SpeechBrain model folder.

    The run's saved ``hyperparams.yaml`` is loaded with HyperPyYAML (so the
    modules are built exactly as in training, whatever the recipe), the
    checkpoint is chosen the way the recipe's test evaluation chooses it
    (lowest ``selection_metric``, or the average of the best
    ``average_checkpoints``) by SpeechBrain's own ``Checkpointer``, and
    the module sections of the same file say how the export rebuilds the
    aggregation and the back-end. The SSL model is stored in the folder when
    it was fine-tuned, and referenced by hub id when it was frozen
    (``freeze_ssl: True``) and came from the hub.

    Loading the YAML runs its ``!apply:`` entries (seeding, and the demo's
    tiny SSL model, reused from the run folder), not the data preparation;
    ``overrides`` can replace entries that should not run here.

    Arguments
    ---------
    run_folder : str or Path
        The run's ``output_folder``.
    export_folder : str or Path
        Where to write the export.
    checkpoint : str
        'best', 'last' or a ``CKPT+...`` folder.
    average : int, optional
        Average the parameters of this many best (or last) checkpoints
        (default: the run's ``average_checkpoints``, as its test evaluation).
    metric : str, optional
        Selection statistic (default: the run's ``selection_metric``, else EER).
    test_set : str, optional
        Export the evaluation settings of this test set (``eval_samples``).
    eval_samples : int or None, optional
        Override the evaluation length (None: full utterances).
    calibration : ScoreCalibration, dict or path, optional
        Score calibration to ship.
    ssl_hub_id : str, optional
        Hub id of a frozen SSL model loaded from a local folder.
    window_seconds, window_hop_seconds : float, optional
        Default windows of :meth:`AntiSpoofModel.score_windows`.
    overrides : dict, optional
        HyperPyYAML overrides when loading the run's YAML.
    overwrite : bool
        Replace an existing export folder.
    verify : bool
        Check that the written folder reproduces the run's modules.

    Returns
    -------
    Path
        The export folder.
    """
    run_folder = Path(run_folder)
    hparams, specs, _ = _load_run_yaml(run_folder, overrides)
    modules = hparams["modules"]
    metric = metric or hparams.get("selection_metric", "EER")
    checkpointer = hparams.get("checkpointer")
    checkpoints_dir = getattr(checkpointer, "checkpoints_dir", None) or run_folder / "save"
    strict = average is not None
    if average is None:
        average = int(hparams.get("average_checkpoints", 1) or 1)
    checkpoints = select_checkpoints(checkpoints_dir, checkpoint, average, metric, strict)
    _load_checkpoint_weights(modules, checkpoints)
    logger.info("Exporting %s", ", ".join(str(ckpt.path.name) for ckpt in checkpoints))

    ssl = modules["ssl"]
    hub_id = None
    if hparams.get("freeze_ssl", False):
        source = getattr(ssl.ssl.model.config, "name_or_path", "") or ""
        hub_id = ssl_hub_id or (source if source and not _is_local(source) else None)
        if hub_id is None:
            logger.info("Frozen SSL model from a local folder: storing its weights")
    settings = EvalSettings(
        sample_rate=hparams.get("sample_rate", DEFAULT_SAMPLE_RATE),
        eval_samples=(
            _eval_samples_of(hparams, test_set) if eval_samples is _UNSET else eval_samples
        ),
        eval_min_samples=hparams.get("eval_min_samples", 0),
        eval_window_seconds=hparams.get("eval_window_seconds"),
        window_seconds=window_seconds,
        window_hop_seconds=window_hop_seconds,
    )
    card = _run_card(
        hparams, specs, run_folder, checkpoints, checkpoint, average, metric, ssl, hub_id
    )
    return write_export(
        export_folder,
        ssl,
        modules["aggregator"],
        modules["backend"],
        specs["aggregator"],
        specs["backend"],
        settings=settings,
        ssl_hub_id=hub_id,
        calibration=calibration,
        card=card,
        overwrite=overwrite,
        verify=verify,
    )


# ------------------------------------------------------ official checkpoints


def load_official_checkpoint(checkpoint):
    """Reads an official checkpoint into a flat ``{name: tensor}`` state dict.

    Accepts a path to a ``.pt`` / ``.pth`` file (``torch.save(model.state_dict())``
    as the official code writes) or an already loaded dict; unwraps a
    ``state_dict`` / ``model`` entry and a DataParallel ``module.`` prefix.

    Arguments
    ---------
    checkpoint : str, Path or dict

    Returns
    -------
    dict

    Example
    -------
    >>> sorted(load_official_checkpoint({"model": {"module.fc.weight": torch.zeros(1)}}))
    ['fc.weight']
    """
    state = checkpoint
    if isinstance(checkpoint, (str, Path)):
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialCheckpointError(
            f"{checkpoint if isinstance(checkpoint, (str, Path)) else 'the checkpoint'} is not "
            "a state dict of tensors (the official code saves model.state_dict())"
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def _official_aggregator_name(state, ssl_prefix):
    present = {
        key[len(AGGREGATOR_PREFIX) :]
        for key in state
        if key.startswith(AGGREGATOR_PREFIX) and not key.startswith(ssl_prefix)
    }
    names = {name for marker, name in _AGGREGATOR_MARKERS.items() if marker in present}
    if len(names) > 1:
        raise OfficialCheckpointError(f"the checkpoint holds several aggregators: {sorted(names)}")
    return names.pop() if names else None


def _partition_official_keys(state, ssl_prefix, aggregator_name):
    """Checks that every key belongs to the back-end, the SSL model or the aggregator."""
    leftover = []
    for key in state:
        if key.startswith((BACKEND_PREFIX, ssl_prefix)):
            continue
        if key.startswith(AGGREGATOR_PREFIX) and aggregator_name is not None:
            continue  # aggregator_from_official refuses anything it does not map
        leftover.append(key)
    if leftover:
        shown = "\n".join(f"  {key}" for key in leftover[:20])
        more = f"\n  ... and {len(leftover) - 20} more" if len(leftover) > 20 else ""
        raise OfficialCheckpointError(
            f"{len(leftover)} checkpoint keys belong to no part of the model (back-end "
            f"{BACKEND_PREFIX}*, SSL {ssl_prefix}*"
            + (f", aggregator {AGGREGATOR_PREFIX}*" if aggregator_name else ", no aggregator")
            + f"):\n{shown}{more}"
        )


def convert_official_checkpoint(
    checkpoint,
    export_folder,
    backend_name,
    backend_config=None,
    ssl_name=None,
    ssl_config=None,
    aggregator_name="auto",
    ssl_source_note=None,
    eval_samples=None,
    eval_min_samples=0,
    calibration=None,
    card=None,
    overwrite=False,
    verify=True,
):
    """Converts an official Nes2Net checkpoint into an export folder.

    The back-end (``Nested_Res2Net_TDNN.*``) and the layer aggregation
    (``ssl_model.*``) go through :mod:`speechbrain_nes2net.official.backend`, the SSL
    front-end (s3prl WavLM under ``ssl_model.model.model.*``, fairseq
    wav2vec 2.0 / XLS-R under ``ssl_model.model.*``) through
    :mod:`speechbrain_nes2net.official.frontend` into transformers
    ``WavLMModel`` / ``Wav2Vec2Model``. Every key of the checkpoint must be
    used (pre-training heads of the SSL model excepted) and every parameter
    filled, or an :class:`OfficialCheckpointError` lists the offending keys.

    Arguments
    ---------
    checkpoint : str, Path or dict
        The official ``.pt`` / ``.pth`` file or its state dict.
    export_folder : str or Path
        Where to write the export.
    backend_name : str
        Official model name: 'WavLM_Nes2Net', 'WavLM_Nes2Net_X',
        'WavLM_Nes2Net_X_SeLU' (CtrSVDD) or 'wav2vec2_Nes2Net_X' (ASVspoof).
    backend_config : dict, optional
        Official back-end arguments (``Nes_ratio``, ``dilation``, ``pool_func``,
        ``SE_ratio``, ``n_output_logits``); ``input_channel`` defaults to the
        SSL model's width.
    ssl_name : str, optional
        's3prl_wavlm' or 'fairseq_wav2vec2' (default: from ``backend_name``).
    ssl_config : dict, optional
        The SSL model's official configuration (default: WavLM-Large /
        XLS-R 300M, :data:`WAVLM_LARGE_CONFIG`, :data:`XLSR_300M_CONFIG`).
    aggregator_name : str or None
        'WavLM_SEA', 'WavLM_WeightedSum', 'WavLM_AttM', None (last layer) or
        'auto' (from the checkpoint's keys).
    ssl_source_note : str, optional
        What the SSL model is, for the model card (default: the released
        model's hub id).
    eval_samples : int, optional
        Score the first N samples (the release's "4 s" mode); full utterances
        when None, as the releases evaluate CtrSVDD and In-the-Wild.
    eval_min_samples : int
        Repeat-pad shorter full utterances to this length.
    calibration : ScoreCalibration, dict or path, optional
        Score calibration to ship.
    card : dict, optional
        Extra model card facts (see :func:`model_card`).
    overwrite : bool
        Replace an existing export folder.
    verify : bool
        Check that the written folder reproduces the converted modules.

    Returns
    -------
    Path
        The export folder.
    """
    state = load_official_checkpoint(checkpoint)
    family = backend_name.split("_", 1)[0]
    if family not in OFFICIAL_SSL:
        raise ValueError(
            f"backend_name={backend_name!r} does not start with one of {sorted(OFFICIAL_SSL)}"
        )
    default_ssl, default_config, hub_id = OFFICIAL_SSL[family]
    ssl_name = ssl_name or default_ssl
    ssl_config = dict(default_config if ssl_config is None else ssl_config)
    ssl_prefix = OFFICIAL_PREFIXES[ssl_name]
    if aggregator_name == "auto":
        aggregator_name = _official_aggregator_name(state, ssl_prefix)
    if aggregator_name is not None and aggregator_name not in AGGREGATORS:
        raise ValueError(
            f"unknown official aggregator {aggregator_name!r}; known: {sorted(AGGREGATORS)}"
        )
    _partition_official_keys(state, ssl_prefix, aggregator_name)

    hf_config = hf_config_from_official(ssl_name, ssl_config)
    num_states, dim = hf_config.num_hidden_layers + 1, hf_config.hidden_size
    backend_config = {"input_channel": dim, **(backend_config or {})}
    if int(backend_config["input_channel"]) != dim:
        raise OfficialCheckpointError(
            f"the back-end takes {backend_config['input_channel']} channels but the SSL model "
            f"gives {dim}"
        )
    backend = backend_from_official(backend_name, backend_config, state)
    cls, kwargs = official_backend_kwargs(backend_name, backend_config)
    backend_spec = ModuleSpec(f"{cls.__module__}.{cls.__qualname__}", kwargs)

    aggregator_kwargs = {
        "name": AGGREGATOR_NAMES.get(aggregator_name, "last"),
        "num_layers": num_states,
        "dim": dim,
    }
    aggregator_spec = ModuleSpec(
        "speechbrain_nes2net.lobes.aggregation.build_aggregator", aggregator_kwargs, kind="apply"
    )
    if aggregator_name is None:
        aggregator = aggregator_spec.build().eval()
    else:
        aggregator = aggregator_from_official(
            aggregator_name, {"n_layers": num_states, "dim": dim}, state
        )
    frontend = frontend_from_official(ssl_name, ssl_config, state, freeze=True)

    name = (
        checkpoint.name
        if isinstance(checkpoint, Path)
        else (Path(checkpoint).name if isinstance(checkpoint, str) else "a state dict")
    )
    released = ssl_config == dict(default_config)
    note = ssl_source_note or (
        f"{hub_id}, fine-tuned in the checkpoint"
        if released
        else f"a {ssl_name} model of the given configuration, weights from the checkpoint"
    )
    defaults = {
        "title": f"Nes2Net official release: {backend_name}"
        + (f" + {aggregator_name}" if aggregator_name else ""),
        "description": (
            "An official Nes2Net checkpoint (Liu et al., IEEE T-IFS 2025) converted to "
            "SpeechBrain with speechbrain-nes2net: the same weights, the SSL front-end as a "
            "transformers model."
        ),
        "origin": (
            f"Converted from the official checkpoint `{name}` (github.com/Liu-Tianchi/Nes2Net, "
            "github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW); check the licence of that release "
            "too."
        ),
        "ssl_source": note,
        "ssl_hub_id": hub_id if released else None,
        "ssl_fine_tuned": True,
    }
    settings = EvalSettings(eval_samples=eval_samples, eval_min_samples=eval_min_samples)
    return write_export(
        export_folder,
        frontend,
        aggregator,
        backend,
        aggregator_spec,
        backend_spec,
        settings=settings,
        calibration=calibration,
        card={**defaults, **(card or {})},
        overwrite=overwrite,
        verify=verify,
    )
