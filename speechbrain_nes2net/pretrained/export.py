"""Exports trained and official Nes2Net models as self-contained SpeechBrain folders.

The folder (``hyperparams.yaml``, ``[ssl.ckpt]``, ``aggregator.ckpt``,
``backend.ckpt``, ``label_encoder.ckpt``, ``custom_interface.py``,
``README.md``; see docs/PRETRAINED.md) loads in a fresh process with
``EncoderClassifier.from_hparams`` or
:class:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel`.
``hyperparams.yaml`` is :data:`~speechbrain_nes2net.pretrained.templates.HYPERPARAMS`
filled in. :func:`export_run` exports a training run; :func:`write_export`
(where it and the official converter end) writes live modules to a staging
folder, checks it, and renames it into place.

Authors
 * speechbrain-nes2net contributors
"""

import dataclasses
import datetime
import io
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_nes2net.evaluation.calibration import DecisionRule, load_calibration
from speechbrain_nes2net.evaluation.files import DECISION_FILE, read_decision
from speechbrain_nes2net.lobes.aasist import AASIST
from speechbrain_nes2net.lobes.aggregation import AGGREGATORS, build_aggregator
from speechbrain_nes2net.lobes.localization import Nes2NetLocalizer
from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX
from speechbrain_nes2net.lobes.ssl import SSLFrontend, is_local_source
from speechbrain_nes2net.pretrained import templates
from speechbrain_nes2net.pretrained.card import model_card
from speechbrain_nes2net.pretrained.modules import (
    AntiSpoofEncoder,
    AntiSpoofHead,
    EvalSettings,
    LabelEncoder,
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
#: The back-ends an export rebuilds: ``backend: !new:<class>`` with its keyword arguments.
BACKENDS = (Nes2Net, Nes2NetX, AASIST, Nes2NetLocalizer)
#: The key under which :func:`_load_run` has HyperPyYAML build the back-end's arguments.
_BACKEND_ARGUMENTS = "export_backend_arguments"


class ExportError(RuntimeError):
    """A model that cannot be exported (or an export that cannot be read) as asked."""


def yaml_value(value, what="a value"):
    """A plain value as YAML: its JSON text (YAML reads it back unchanged; tuples become lists)."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ExportError(
            f"{what} is {value!r}, which an export cannot write ({err}); it needs plain values "
            "(numbers, strings, booleans, null, lists, mappings)"
        ) from None


def _argument_lines(arguments, indent, what):
    """Block-style ``key: value`` lines of keyword arguments, ``indent`` spaces in."""
    pad = " " * indent
    lines = [f"{pad}{key}: {yaml_value(value, f'{what}.{key}')}" for key, value in arguments.items()]
    return "\n".join(lines) or pad + "{}"


def _ssl_entry(frontend, hub_id):
    """The ``ssl:`` entry: from the hub when ``hub_id`` is set, else from the inline config."""
    normalize = yaml_value(bool(frontend.normalize))
    if hub_id is not None:
        return templates.SSL_FROM_HUB.format(hub_id=yaml_value(hub_id), normalize=normalize)
    config = json.loads(frontend.ssl.model.config.to_json_string(use_diff=False))
    for bookkeeping in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        config.pop(bookkeeping, None)
    return templates.SSL_STORED.format(
        model_type=yaml_value(config.pop("model_type")),
        normalize=normalize,
        config=_argument_lines(config, 8, "ssl.config"),
    )


def _aggregator_arguments(aggregator, dim):
    """The ``build_aggregator`` arguments (name, num_layers, dim) that rebuild an aggregator."""
    names = {cls: name for name, cls in AGGREGATORS.items()}
    if type(aggregator) not in names:
        raise ExportError(
            f"an export rebuilds the layer aggregation with build_aggregator, which makes "
            f"{sorted(AGGREGATORS)}; got {type(aggregator).__name__}"
        )
    return {"name": names[type(aggregator)], "num_layers": aggregator.num_layers, "dim": dim}


def _check_rebuilds(rebuilt, module, what):
    """Checks that ``rebuilt`` (from the YAML's arguments) has ``module``'s layers and weights."""
    if type(rebuilt) is not type(module) or repr(rebuilt) != repr(module):
        raise ExportError(
            f"the exported {what} arguments build\n{rebuilt!r}\nbut the module to export is\n"
            f"{module!r}"
        )
    try:
        rebuilt.load_state_dict(module.state_dict(), strict=True)
    except RuntimeError as err:
        raise ExportError(f"the exported {what} does not match the module's weights: {err}") from None


def _modules_text(aggregator, backend, backend_kwargs, dim):
    """The aggregator and back-end placeholders of the template, checked to rebuild the modules."""
    if type(backend) not in BACKENDS:
        raise ExportError(
            f"an export rebuilds the back-ends {[cls.__name__ for cls in BACKENDS]}; got "
            f"{type(backend).__name__}"
        )
    aggregation = _aggregator_arguments(aggregator, dim)
    # What the YAML will hold, read back: JSON turns tuples into lists.
    backend_kwargs = json.loads(yaml_value(dict(backend_kwargs), "the back-end's arguments"))
    _check_rebuilds(build_aggregator(**aggregation), aggregator, "aggregator")
    try:
        rebuilt = type(backend)(**backend_kwargs)
    except (TypeError, ValueError) as err:
        raise ExportError(
            f"{type(backend).__name__}(**{backend_kwargs}) fails: {err}; pass the arguments the "
            "back-end was built with"
        ) from None
    _check_rebuilds(rebuilt, backend, "back-end")
    return {
        "aggregation": yaml_value(aggregation["name"]),
        "num_layers": yaml_value(aggregation["num_layers"]),
        "dim": yaml_value(dim),
        "backend_class": f"{type(backend).__module__}.{type(backend).__qualname__}",
        "backend_arguments": _argument_lines(backend_kwargs, 4, "backend"),
    }


def _localization_entry(localization, backend):
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
    return templates.LOCALIZATION.format(localization=yaml_value(entry, "localization"))


def _check_no_absolute_paths(text, what):
    found = re.findall(r"""["'\s:](/[\w.\-]+/[\w./\-]*|~/[\w./\-]*|[A-Za-z]:\\[^\s"']*)""", text)
    if found:
        raise ExportError(
            f"{what} would contain absolute paths {sorted(set(found))[:5]}; an export folder "
            "must be relocatable"
        )


def hyperparams_text(
    ssl, aggregator, backend, backend_kwargs, settings, decision, ssl_hub_id=None,
    localization=None, title="SSL + Nes2Net anti-spoofing model",
):  # fmt: skip
    """The ``hyperparams.yaml`` of an export: :data:`templates.HYPERPARAMS` filled in.

    Arguments
    ---------
    ssl, aggregator, backend, backend_kwargs, ssl_hub_id, localization
        As :func:`write_export` takes them.
    settings : EvalSettings
        Input settings (resolved).
    decision : dict
        ``DecisionRule.to_dict()``, with its calibration.
    title : str
        The header's first line.

    Returns
    -------
    str

    Example
    -------
    >>> from speechbrain_nes2net.lobes.ssl import SSLFrontendFromConfig
    >>> config = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...     intermediate_size=8, conv_dim=[8], conv_kernel=[10], conv_stride=[5])
    >>> ssl = SSLFrontendFromConfig("wavlm", config, normalize=True)
    >>> backend_kwargs = {"input_size": 32, "outer_ratio": 4, "inner_ratio": 2}
    >>> text = hyperparams_text(ssl, build_aggregator("AttM", 2, 32), Nes2NetX(**backend_kwargs),
    ...     backend_kwargs, EvalSettings().resolved(), DecisionRule(0.5).to_dict())
    >>> print(text[text.index("aggregator:"):text.index("# EncoderClassifier")].strip())
    aggregator: !apply:speechbrain_nes2net.lobes.aggregation.build_aggregator
        name: "AttM"
        num_layers: 2
        dim: 32
    <BLANKLINE>
    backend: !new:speechbrain_nes2net.lobes.nes2net.Nes2NetX
        input_size: 32
        outer_ratio: 4
        inner_ratio: 2
    """
    loadables = ["aggregator", "backend", "label_encoder"]
    if ssl_hub_id is None:
        loadables.insert(0, "ssl")
    return templates.HYPERPARAMS.format(
        title=title,
        date=datetime.date.today().isoformat(),
        export_format=EXPORT_FORMAT,
        **{key: yaml_value(value) for key, value in dataclasses.asdict(settings).items()},
        calibration=yaml_value(decision["calibration"]),
        decision=yaml_value(decision),
        ssl=_ssl_entry(ssl, ssl_hub_id),
        **_modules_text(aggregator, backend, backend_kwargs, ssl.ssl.model.config.hidden_size),
        loadables="\n".join(f"        {name}: !ref <{name}>" for name in loadables),
        localization="" if localization is None else _localization_entry(localization, backend),
    )


def write_export(
    folder, ssl, aggregator, backend, backend_kwargs, settings=None, ssl_hub_id=None,
    decision=None, card=None, overwrite=False, verify=True, localization=None,
):  # fmt: skip
    """Writes live modules as an export folder.

    Arguments
    ---------
    folder : str or Path
        Output folder (must not exist unless ``overwrite``).
    ssl, aggregator, backend : torch.nn.Module
        The SSL front-end (an ``SSLFrontend``), the layer aggregation (one of
        ``build_aggregator``'s) and the back-end (one of :data:`BACKENDS`).
    backend_kwargs : dict
        The keyword arguments the back-end was built with (plain data).
    settings : EvalSettings, optional
        Input settings; defaults to full utterances at 16 kHz.
    ssl_hub_id : str, optional
        Reference the SSL model by this hub id instead of storing its weights
        (only right when it was frozen in training).
    decision : DecisionRule or dict, optional
        How the model decides (with its calibration); without one, labels
        follow the raw score's sign, with a warning.
    card : dict, optional
        Model card facts (see :func:`model_card`).
    overwrite : bool
        Replace an existing folder.
    verify : bool
        Check that the written folder, loaded by ``EncoderClassifier``,
        reproduces the live modules' logits.
    localization : dict, optional
        The segment decision rule of a localisation model (a run's
        ``localization.json``), read by :meth:`AntiSpoofModel.localize`.

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
    AntiSpoofHead(backend)  # fails early for a back-end without an output layer
    card = dict(card or {})
    text = hyperparams_text(
        ssl, aggregator, backend, backend_kwargs, settings, decision, ssl_hub_id, localization,
        title=card.get("title", "SSL + Nes2Net anti-spoofing model"),
    )  # fmt: skip
    _check_no_absolute_paths(text, "hyperparams.yaml")
    dim = ssl.ssl.model.config.hidden_size
    card_text = model_card(
        card, ssl, ssl_hub_id, _aggregator_arguments(aggregator, dim), backend, backend_kwargs,
        settings, decision,
    )  # fmt: skip
    _check_no_absolute_paths(card_text, "README.md")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    try:
        (staging / "hyperparams.yaml").write_text(text, encoding="utf-8")
        modules = {"aggregator": aggregator, "backend": backend}
        if ssl_hub_id is None:
            modules["ssl"] = ssl
        for name, module in modules.items():
            state = {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}
            torch.save(state, staging / f"{name}.ckpt")
        encoder = LabelEncoder()
        encoder.update_from_iterable(LABELS)
        encoder.save(staging / "label_encoder.ckpt")
        (staging / "custom_interface.py").write_text(templates.CUSTOM_INTERFACE, encoding="utf-8")
        (staging / "README.md").write_text(card_text, encoding="utf-8")
        if verify:
            _verify_export(staging, ssl, aggregator, backend, settings)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported model -> %s", folder)
    return folder


def _verify_export(folder, ssl, aggregator, backend, settings, atol=1e-5):
    """Checks that the folder, loaded by ``EncoderClassifier``, reproduces the modules' logits."""
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, int(1.3 * settings.sample_rate), generator=generator)
    lengths = torch.tensor([1.0, 0.7])
    reference = AntiSpoofEncoder(
        ssl, aggregator, backend, settings.eval_samples, settings.eval_min_samples,
        settings.eval_window_seconds, settings.sample_rate,
    )  # fmt: skip
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
            loaded = EncoderClassifier.from_hparams(
                source=str(folder), savedir=savedir, run_opts={"device": "cpu"}
            )
        except Exception as err:  # any loading failure means a broken export
            raise ExportError(f"the export in {folder} does not load: {err}") from err
        with torch.no_grad():
            got = loaded.mods.classifier.logits(loaded.encode_batch(wavs, lengths))
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=1e-5):
        raise ExportError(
            f"the export does not reproduce the model: logits {got.tolist()} instead of "
            f"{expected.tolist()}"
        )


# --------------------------------------------------------------- from a run


def _load_run(run_folder, overrides):
    """The run's hparams (loaded by HyperPyYAML) and its back-end's keyword arguments.

    The ``backend`` entry's mapping is copied untagged under another key, so
    that HyperPyYAML builds the arguments it passed the back-end as a dict.
    """
    path = Path(run_folder) / "hyperparams.yaml"
    if not path.is_file():
        raise ExportError(
            f"{run_folder} is not a training run folder: no hyperparams.yaml (the copy "
            "recipes/train.py writes into output_folder)"
        )
    yaml = ruamel.yaml.YAML()
    tree = yaml.load(path.read_text(encoding="utf-8"))
    backend = tree.get("backend")
    if not (isinstance(backend, dict) and str(backend.tag.value).startswith("!new:")):
        raise ExportError(
            f"{path}: the back-end is not built as '!new:<class>' with keyword arguments; an "
            f"export rebuilds {[cls.__name__ for cls in BACKENDS]} that way"
        )
    tree[_BACKEND_ARGUMENTS] = ruamel.yaml.comments.CommentedMap(backend)
    text = io.StringIO()
    yaml.dump(tree, text)
    # Exporting prepares no data: the corpus scripts (data_prep/, not installed with
    # the library) need not be importable where the export runs.
    overrides = {"data_preparation": None, **(overrides or {})}
    hparams = load_hyperpyyaml(text.getvalue(), overrides)
    modules = hparams.get("modules")
    if not isinstance(modules, dict) or not set(MODEL_MODULES) <= set(modules):
        raise ExportError(
            f"{path}: 'modules' must hold ssl, aggregator and backend (the AntiSpoofBrain modules)"
        )
    return hparams, dict(hparams[_BACKEND_ARGUMENTS])


def _run_card(hparams, run_folder, checkpoints, checkpoint, average, metric, hub_id, run_choice):
    """Model card facts of a training run (relative names only)."""
    describe = hparams.get
    training = {
        "epochs": describe("number_of_epochs"),
        "back-end learning rate": describe("lr_backend"),
        "SSL learning rate": None if hparams["freeze_ssl"] else describe("lr_ssl"),
        "SSL frozen": bool(hparams["freeze_ssl"]),
        "loss": type(hparams["loss"]).__name__ if "loss" in hparams else None,
        "batch size": (hparams["train_dataloader_options"] or {}).get("batch_size"),
        "training crop (samples)": describe("train_samples"),
        "augmentation": repr(waveform_augmentation(hparams) or "none"),
        "seed": describe("seed"),
        "checkpoint": f"{checkpoint}" + (f", average of {average}" if average > 1 else "")
        + f" (selection metric: dev {metric})",
    }  # fmt: skip
    data = {"train": hparams["train_data"], "dev": hparams["valid_data"]}
    for name, spec in (hparams["test_sets"] or {}).items():
        samples = spec.get("eval_samples")
        data[f"test {name}"] = spec.get("data") + (
            f" (first {samples} samples)" if samples else " (full utterances)"
        )
    metrics, note = {}, None
    scores = Path(run_folder) / "scores"
    meta = checkpoints[0].meta if len(checkpoints) == 1 else {}
    if meta and not (scores / f"{str(data['dev']).replace('/', '_')}_metrics.json").is_file():
        metrics["dev (selected checkpoint)"] = {
            "eer": meta["EER"] / 100 if meta.get("EER") is not None else None,
            "min_dcf": meta.get("minDCF"),
        }
    test_metrics = sorted(scores.glob("*_metrics.json")) if scores.is_dir() else []
    if test_metrics and run_choice:
        for path in test_metrics:
            values = json.loads(path.read_text())
            metrics[values.get("test_set", path.stem[: -len("_metrics")])] = values
        note = "Test metrics as computed by the training run with this checkpoint."
    elif test_metrics:
        note = (
            "The training run's test metrics were computed with the checkpoint it selected, "
            "not with these weights; they are left out."
        )
    return {
        "title": f"SSL + {type(hparams['modules']['backend']).__name__} anti-spoofing model",
        "origin": f"Trained with speechbrain-nes2net (run `{Path(run_folder).name}`).",
        "ssl_source": hub_id or "a local SSL model folder",
        "ssl_hub_id": hub_id,
        "ssl_fine_tuned": not bool(hparams["freeze_ssl"]),
        "training": {k: v for k, v in training.items() if v is not None},
        "data": {k: v for k, v in data.items() if v is not None},
        "metrics": metrics,
        "metrics_note": note,
    }


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What an export of a run ships besides the weights, where it differs from the run's.

    Arguments
    ---------
    test_set : str, optional
        Export the evaluation length (``eval_samples``) of this test set of the run.
    eval_samples : int or str, optional
        Score the first N samples, or 'full' utterances (default: as the
        run's test sets, see ``test_set``).
    window_seconds, window_hop_seconds : float, optional
        Default windows of :meth:`AntiSpoofModel.score_windows`.
    calibration : ScoreCalibration, dict or path, optional
        Score calibration to ship instead of the run's ``decision.json``; the
        decision is then its Bayes threshold at ``decision_prior``.
    decision_prior : float, optional
        Bona fide prior of the decision with ``calibration`` (default: the
        run's ``decision_prior``).
    ssl_hub_id : str, optional
        Hub id of a frozen SSL model loaded from a local folder.

    Example
    -------
    >>> ExportOptions(eval_samples="full").eval_samples_of({})
    >>> ExportOptions(eval_samples=64600).eval_samples_of({})
    64600
    """

    test_set: str = None
    eval_samples: object = None
    window_seconds: float = None
    window_hop_seconds: float = None
    calibration: object = None
    decision_prior: float = None
    ssl_hub_id: str = None

    def eval_samples_of(self, hparams):
        """The exported ``eval_samples`` (None: full utterances) of a run's hparams."""
        if self.eval_samples is not None:
            return None if self.eval_samples == "full" else int(self.eval_samples)
        specs = hparams["test_sets"] or {}
        if self.test_set is not None:
            if self.test_set not in specs:
                raise ExportError(
                    f"test_set={self.test_set!r} is not in the run's test_sets {sorted(specs)}"
                )
            return specs[self.test_set].get("eval_samples")
        values = {spec.get("eval_samples") for spec in specs.values()}
        if len(values) > 1:
            logger.warning(
                "The test sets use different eval_samples %s: exporting full-utterance scoring; "
                "pass test_set= or eval_samples= to choose", sorted(values, key=str),
            )  # fmt: skip
        return values.pop() if len(values) == 1 else None


def _run_decision(run_folder, options, prior, run_choice):
    """The decision rule an export of a run ships (see :func:`export_run`)."""
    if options.calibration is not None:
        calibration = load_calibration(options.calibration)
        return DecisionRule.from_calibration(calibration, prior, "a calibration given to the export")
    if not run_choice:
        logger.warning(
            "The run's decision rule was fitted for the checkpoint its test evaluation used, "
            "not for these weights: the labels follow the raw score's sign; pass a calibration "
            "fitted on their development scores"
        )
        return None
    decision, dev = read_decision(run_folder)
    if decision is None:
        raise ExportError(
            f"{run_folder} has no {DECISION_FILE} (recipes/train.py writes it after the test "
            "evaluation, fitted on the development scores): pass a calibration fitted on "
            "development scores (calibration=..., recipes/export.py --calibration FILE)"
        )
    counts = f" ({dev['n_bonafide']} bona fide, {dev['n_spoof']} spoof files)" if "n_spoof" in dev else ""
    where = dev.get("test_set") or "of the run"
    return dataclasses.replace(decision, fitted_on=f"the development set {where}{counts}")


def export_run(
    run_folder, export_folder, checkpoint="best", average=None, metric=None, options=None,
    overrides=None, overwrite=False, verify=True,
):  # fmt: skip
    """Exports a training run of ``recipes/train.py`` as a SpeechBrain model folder.

    The run's ``hyperparams.yaml`` is loaded with HyperPyYAML (its ``!apply:``
    entries run, not the data preparation); the checkpoint is chosen as the
    recipe's test evaluation chooses it. The SSL model is stored when it was
    fine-tuned, referenced by hub id when it was frozen and came from the hub.
    The decision rule is the run's ``decision.json`` for the checkpoint its
    test evaluation used; other weights ship ``options.calibration``, else no
    rule (labels follow the raw score's sign, and the card says so).

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
        (default: the run's ``average_checkpoints``).
    metric : str, optional
        Selection statistic (default: the run's ``selection_metric``).
    options : ExportOptions, optional
        Evaluation settings, calibration and SSL reference, where they differ
        from the run's.
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
    options = options or ExportOptions()
    hparams, backend_kwargs = _load_run(run_folder, overrides)
    modules = hparams["modules"]
    run_metric = hparams["selection_metric"]
    run_average = int(hparams["average_checkpoints"] or 1)
    metric = metric or run_metric
    strict = average is not None
    average = run_average if average is None else average
    try:
        checkpoints = select_checkpoints(
            hparams["checkpointer"].checkpoints_dir, checkpoint, average, metric, strict
        )
        load_checkpoint_average(modules, checkpoints, MODEL_MODULES)
    except CheckpointSelectionError as err:
        raise ExportError(str(err)) from None
    logger.info("Exporting %s", ", ".join(str(ckpt.path.name) for ckpt in checkpoints))

    ssl = modules["ssl"]
    source = getattr(ssl.ssl.model.config, "name_or_path", "") or ""
    hub_source = source if source and not is_local_source(source) else None
    hub_id = None
    if hparams["freeze_ssl"]:
        hub_id = options.ssl_hub_id or hub_source
        if hub_id is None:
            logger.info("Frozen SSL model from a local folder: storing its weights")
    settings = EvalSettings(
        sample_rate=hparams["sample_rate"],
        eval_samples=options.eval_samples_of(hparams),
        eval_min_samples=hparams["eval_min_samples"],
        eval_window_seconds=hparams["eval_window_seconds"],
        window_seconds=options.window_seconds,
        window_hop_seconds=options.window_hop_seconds,
    )
    # The run's decision rule (and its test metrics) belong to the weights its test evaluation used.
    run_choice = checkpoint == "best" and metric == run_metric and average == run_average
    card = _run_card(
        hparams, run_folder, checkpoints, checkpoint, average, metric, hub_id or hub_source,
        run_choice,
    )  # fmt: skip
    prior = hparams["decision_prior"] if options.decision_prior is None else options.decision_prior
    decision = _run_decision(run_folder, options, prior, run_choice)
    localization = None
    if hasattr(modules["backend"], "forward_with_frames"):
        path = run_folder / LOCALIZATION_FILE
        if path.is_file():
            localization = json.loads(path.read_text())
        else:
            logger.warning(
                "%s has no %s: the export's localize() decides segments of 0.16 s at raw "
                "score 0", run_folder, LOCALIZATION_FILE,
            )  # fmt: skip
    return write_export(
        export_folder, ssl, modules["aggregator"], modules["backend"], backend_kwargs,
        settings=settings, ssl_hub_id=hub_id, decision=decision, card=card,
        overwrite=overwrite, verify=verify, localization=localization,
    )  # fmt: skip
