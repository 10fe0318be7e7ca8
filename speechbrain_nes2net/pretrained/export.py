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

Entry points:

- :func:`export_run`: a training run folder (best, last or averaged
  checkpoints) -> export;
- :func:`write_export`: live modules + how to rebuild them -> export (the
  above, and :func:`speechbrain_nes2net.official.convert.convert_official_checkpoint`
  for a released official checkpoint, end here). It checks that the YAML rebuilds the same modules and,
  by default, that the written folder reproduces the modules' scores.

Authors
 * speechbrain-nes2net contributors
"""

import datetime
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.audio import DEFAULT_SAMPLE_RATE
from speechbrain_nes2net.evaluation.calibration import DecisionRule, load_calibration
from speechbrain_nes2net.evaluation.files import read_decision
from speechbrain_nes2net.lobes.ssl import SSLFrontend, is_local_source
from speechbrain_nes2net.pretrained.card import model_card
from speechbrain_nes2net.pretrained.modules import (
    AntiSpoofEncoder,
    AntiSpoofHead,
    EvalSettings,
    LabelEncoder,
)
from speechbrain_nes2net.pretrained.yaml_spec import (
    ExportError,
    ModuleSpec,
    block,
    flow,
    scalar,
)
from speechbrain_nes2net.scores import LABELS
from speechbrain_nes2net.training.checkpoints import (
    MODEL_MODULES,
    CheckpointSelectionError,
    load_checkpoint_average,
    select_checkpoints,
)
from speechbrain_nes2net.training.recipe import LOCALIZATION_FILE, waveform_augmentation

logger = logging.getLogger(__name__)

#: Version of the folder layout: 2 added the ``decision`` rule.
EXPORT_FORMAT = 2
_DECISION_SOURCES = {
    "calibration": "the Bayes decision of the calibrated score at the bona fide prior",
    "dev_eer": "the development EER threshold (no calibration could be fitted)",
    "logit_0": "no threshold was fitted; the raw score's sign",
}

_CUSTOM_INTERFACE = '''"""Interface for speechbrain.inference.interfaces.foreign_class.

The class lives in the installed package (pip install speechbrain-nes2net):
    foreign_class(source, pymodule_file="custom_interface.py", classname="AntiSpoofModel")
"""

from speechbrain_nes2net.pretrained.interface import AntiSpoofModel  # noqa: F401
'''


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
                f"    source: {scalar(hub_id)}",
                "    save_path: !apply:speechbrain_nes2net.lobes.ssl.hf_cache_dir []",
                "    freeze: true",
                f"    normalize: {scalar(normalize)}",
            ]
        )
    config = _ssl_config_dict(frontend)
    model_type = config.pop("model_type")
    return "\n".join(
        [
            "ssl: !new:speechbrain_nes2net.lobes.ssl.SSLFrontendFromConfig",
            f"    model_type: {scalar(model_type)}",
            f"    normalize: {scalar(normalize)}",
            "    freeze: true",
            "    config:",
        ]
        + block(config, 2)
    )


# ------------------------------------------------------------------ export


def _hyperparams_text(ssl_entry, aggregator_spec, backend_spec, settings, decision, header):
    calibration = decision["calibration"]
    calibration_text = "null" if calibration is None else flow(calibration)
    return f"""{header}
export_format: {EXPORT_FORMAT}
# Input: any audio; read as {settings.sample_rate} Hz mono (channels averaged, resampled).
sample_rate: {settings.sample_rate}
eval_samples: {scalar(settings.eval_samples)}   # first N samples, repeat-padded (null: all)
eval_min_samples: {settings.eval_min_samples}   # shorter full utterances are repeat-padded to this
eval_window_seconds: {scalar(settings.eval_window_seconds)}   # longer: mean logits of windows
window_seconds: {scalar(settings.window_seconds)}   # AntiSpoofModel.score_windows defaults
window_hop_seconds: {scalar(settings.window_hop_seconds)}

# Scores: higher = more bona fide; the raw score is the back-end's bona fide
# logit. A calibration maps it to a log-likelihood ratio: scale * score + offset.
calibration: {calibration_text}
# Decisions (EncoderClassifier labels, AntiSpoofModel, nes2net-score --labels):
# bona fide when the raw score >= threshold ({decision["source"]}: {_DECISION_SOURCES[decision["source"]]}).
decision: {flow(decision)}

# Model --------------------------------------------------------------------
{ssl_entry}

{aggregator_spec.to_yaml("aggregator")}

{backend_spec.to_yaml("backend")}

# EncoderClassifier slots ---------------------------------------------------
compute_features: !new:speechbrain_nes2net.pretrained.modules.MonoWaveforms
mean_var_norm: !new:speechbrain_nes2net.pretrained.modules.PassThrough
embedding_model: !new:speechbrain_nes2net.pretrained.modules.AntiSpoofEncoder
    ssl: !ref <ssl>
    aggregator: !ref <aggregator>
    backend: !ref <backend>
    num_samples: !ref <eval_samples>
    min_samples: !ref <eval_min_samples>
    window_seconds: !ref <eval_window_seconds>
    sample_rate: !ref <sample_rate>
classifier: !new:speechbrain_nes2net.pretrained.modules.AntiSpoofHead
    backend: !ref <backend>
    decision: !ref <decision>

label_encoder: !new:speechbrain_nes2net.pretrained.modules.LabelEncoder
audio_normalizer: !new:speechbrain_nes2net.pretrained.modules.AudioNormalizer
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


def _localization_text(localization, backend):
    """The ``localization`` entry of a localisation model's ``hyperparams.yaml``."""
    if not hasattr(backend, "forward_with_frames"):
        raise ExportError(
            f"a localisation rule was given, but the back-end {type(backend).__name__} has no "
            "frame-level head"
        )
    keys = ("segment_shift", "frame_shift", "pooling", "decision")
    missing = [key for key in keys if key not in localization]
    if missing:
        raise ExportError(f"the localisation rule lacks {missing} (expected {list(keys)})")
    entry = {key: localization[key] for key in keys}
    return (
        "\n# Localisation (AntiSpoofModel.localize, nes2net-score --frames): frame scores\n"
        "# pooled to segment_shift s (pooling), a segment bona fide when its raw score >=\n"
        "# decision.threshold (fitted on development segments).\n"
        f"localization: {flow(entry)}\n"
    )


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
    decision=None,
    card=None,
    overwrite=False,
    verify=True,
    localization=None,
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
    decision : DecisionRule or dict, optional
        How the model decides (with its calibration); without one, labels
        follow the raw score's sign, with a warning.
    card : dict, optional
        Model card facts (see :func:`model_card`).
    overwrite : bool
        Replace an existing folder.
    verify : bool
        Load the written folder with :class:`AntiSpoofModel` and check that it
        reproduces the live modules' logits.
    localization : dict, optional
        The segment decision rule of a localisation model (what a run's
        ``localization.json`` holds: ``segment_shift``, ``pooling``,
        ``decision``), written as the ``localization`` entry that
        :meth:`AntiSpoofModel.localize` reads.

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
    if decision is None:
        logger.warning(
            "No decision rule (calibration or threshold) for this export: its labels follow "
            "the raw score's sign, which can be far from the model's equal-error point"
        )
        decision = DecisionRule(0.0, source="logit_0")
    if isinstance(decision, dict):
        decision = DecisionRule.from_dict(decision)
    decision = decision.to_dict()
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
        _ssl_yaml(ssl, ssl_hub_id), aggregator_spec, backend_spec, settings, decision, header
    )
    if localization is not None:
        text += _localization_text(localization, backend)
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
            decision=decision,
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
    if not isinstance(modules, dict) or not set(MODEL_MODULES) <= set(modules):
        raise ExportError(
            f"{path}: 'modules' must hold ssl, aggregator and backend (the AntiSpoofBrain modules)"
        )
    specs = {
        name: ModuleSpec.from_yaml_node(modules[name], f"{path.name}: modules.{name}")
        for name in ("aggregator", "backend")
    }
    hparams = load_hyperpyyaml(text, overrides or {})
    return hparams, specs, raw


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
        "augmentation": repr(waveform_augmentation(hparams) or "none"),
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
    dev_scored = (Path(run_folder) / "scores" / f"{str(data['dev']).replace('/', '_')}_metrics.json")
    if meta and not dev_scored.is_file():
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
        source if source and not is_local_source(source) else "a local SSL model folder"
    )
    return {
        "title": f"SSL + {specs['backend'].target.rsplit('.', 1)[-1]} anti-spoofing model",
        "origin": f"Trained with speechbrain-nes2net (run `{Path(run_folder).name}`).",
        "ssl_source": ssl_note,
        "ssl_hub_id": hub_id or (source if source and not is_local_source(source) else None),
        "ssl_fine_tuned": not bool(hparams.get("freeze_ssl", False)),
        "training": {k: v for k, v in training.items() if v is not None},
        "data": {k: v for k, v in data.items() if v is not None},
        "metrics": metrics,
        "metrics_note": note,
    }


_UNSET = object()


def _export_decision(run_folder, calibration, prior, run_choice):
    """The decision rule an export of a run ships (see :func:`export_run`)."""
    if calibration is not None:
        return DecisionRule.from_calibration(load_calibration(calibration), prior)
    decision, _ = read_decision(run_folder)
    if decision is None:
        logger.warning(
            "%s has no decision.json (runs of recipes/train.py before version 0.2): pass a "
            "calibration fitted on development scores", run_folder,
        )
        return None
    if not run_choice:
        logger.warning(
            "The run's decision rule was fitted for the checkpoint its test evaluation used, "
            "not for these weights: pass a calibration fitted on their development scores"
        )
        return None
    return decision


def export_run(
    run_folder,
    export_folder,
    checkpoint="best",
    average=None,
    metric=None,
    test_set=None,
    eval_samples=_UNSET,
    calibration=None,
    decision_prior=None,
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
        Score calibration to ship instead of the run's (``decision.json``,
        fitted on its development scores by ``recipes/train.py``); the
        decision is then its Bayes threshold at ``decision_prior``.
    decision_prior : float, optional
        Bona fide prior of the decision with ``calibration`` (default: the
        run's ``decision_prior``, else 0.5).
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
    try:
        checkpoints = select_checkpoints(checkpoints_dir, checkpoint, average, metric, strict)
        load_checkpoint_average(modules, checkpoints, MODEL_MODULES)
    except CheckpointSelectionError as err:
        raise ExportError(str(err)) from None
    logger.info("Exporting %s", ", ".join(str(ckpt.path.name) for ckpt in checkpoints))

    ssl = modules["ssl"]
    hub_id = None
    if hparams.get("freeze_ssl", False):
        source = getattr(ssl.ssl.model.config, "name_or_path", "") or ""
        hub_id = ssl_hub_id or (source if source and not is_local_source(source) else None)
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
    run_choice = checkpoint == "best" and metric == hparams.get("selection_metric", "EER")
    run_choice = run_choice and average == int(hparams.get("average_checkpoints", 1) or 1)
    prior = decision_prior if decision_prior is not None else hparams.get("decision_prior", 0.5)
    decision = _export_decision(run_folder, calibration, prior, run_choice)
    localization = None
    if hasattr(modules["backend"], "forward_with_frames"):
        path = run_folder / LOCALIZATION_FILE
        if path.is_file():
            localization = json.loads(path.read_text())
        else:
            logger.warning(
                "%s has no %s: the export's localize() decides segments of 0.16 s at raw "
                "score 0", run_folder, LOCALIZATION_FILE,
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
        decision=decision,
        card=card,
        overwrite=overwrite,
        verify=verify,
        localization=localization,
    )


# ------------------------------------------------------ official checkpoints


