"""The model card (``README.md``) of an export folder.

Authors
 * speechbrain-nes2net contributors
"""

import json

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


def _licence(ssl_hub_id, ssl_source_note):
    if ssl_hub_id in SSL_LICENCES:
        return SSL_LICENCES[ssl_hub_id]
    return (
        "other",
        f"the SSL front-end ({ssl_source_note}): check its licence before redistributing",
    )


def _decision_lines(decision):
    """The card's paragraphs on the calibration and the decision threshold."""
    calibration = decision["calibration"]
    lines = ["## Decisions", ""]
    if calibration is not None:
        lines += [
            (
                "Calibration (fitted on the development scores, shipped in `hyperparams.yaml`): "
                f"`LLR = {calibration['scale']:.6g} * score "
                f"{'+' if calibration['offset'] >= 0 else '-'} {abs(calibration['offset']):.6g}`; "
                "`AntiSpoofModel` returns the LLR, `calibrated=False` the raw score."
            ),
            "",
        ]
    else:
        lines += ["No calibration is shipped: scores are raw (not log-likelihood ratios).", ""]
    explanation = {
        "calibration": (
            f"the Bayes decision of the calibrated score at a bona fide prior of "
            f"{decision['prior']:g} (equal costs)"
        ),
        "dev_eer": "the development set's EER threshold (too few trials for a calibration)",
        "logit_0": (
            "**no threshold was fitted**: the raw score's sign, which can be far from the "
            "model's equal-error point; score a development set and export with a calibration"
        ),
    }[decision["source"]]
    lines += [
        (
            f"A file is labelled bona fide when its raw score is >= {decision['threshold']:.6g}: "
            f"{explanation}. `EncoderClassifier`, `AntiSpoofModel` and `nes2net-score --labels` "
            "all decide this way; the error rates at this threshold are in the results below "
            "(bona fide rejection = BPCER, spoof acceptance = APCER)."
        ),
        "",
    ]
    return lines


def _metrics_table(metrics):
    lines = [
        "| set | EER (%) | minDCF | bona fide rejected (%) | spoof accepted (%) "
        "| trials (bona fide / spoof) |",
        "|---|---|---|---|---|---|",
    ]
    percent = lambda value: "-" if value is None else f"{100 * value:.2f}"
    for name, values in metrics.items():
        eer_text = percent(values.get("eer"))
        dcf = values.get("min_dcf")
        dcf_text = "-" if dcf is None else f"{dcf:.4f}"
        counts = "-"
        if values.get("n_bonafide") is not None:
            counts = f"{values['n_bonafide']} / {values['n_spoof']}"
        rates = f"{percent(values.get('bpcer'))} | {percent(values.get('apcer'))}"
        lines.append(f"| {name} | {eer_text} | {dcf_text} | {rates} | {counts} |")
    return "\n".join(lines)


def card_error_rates(text):
    """The rows of a model card's results table (:func:`model_card`; none without one).

    Per set: ``set``, ``eer``, ``bpcer`` (bona fide rejected) and ``apcer``
    (spoof accepted) at the shipped threshold, as fractions (None for '-'),
    and ``trials`` (text).

    Example
    -------
    >>> metrics = {"dev": {"eer": 0.05, "bpcer": 0.04, "apcer": 0.0625, "n_bonafide": 50,
    ...                    "n_spoof": 80}, "test": {"eer": 0.1}}
    >>> rows = card_error_rates("# Card\\n\\n" + _metrics_table(metrics) + "\\n\\nMore.")
    >>> [(row["set"], row["bpcer"], row["apcer"], row["trials"]) for row in rows]
    [('dev', 0.04, 0.0625, '50 / 80'), ('test', None, None, '-')]
    """
    lines = text.splitlines()
    header = _metrics_table({}).splitlines()[0]
    if header not in lines:
        return []
    fraction = lambda cell: None if cell == "-" else float(cell) / 100
    rows = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        name, eer, _, bpcer, apcer, trials = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append(
            {"set": name, "eer": fraction(eer), "bpcer": fraction(bpcer), "apcer": fraction(apcer),
             "trials": trials}
        )  # fmt: skip
    return rows


def model_card(
    card, ssl, ssl_hub_id, aggregator_arguments, backend, backend_kwargs, settings, decision
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
    ssl : SSLFrontend
        The exported front-end.
    ssl_hub_id : str or None
        Hub id the SSL model is referenced by (frozen models).
    aggregator_arguments : dict
        The exported ``build_aggregator`` arguments.
    backend : torch.nn.Module
        The exported back-end.
    backend_kwargs : dict
        Its exported keyword arguments.
    settings : EvalSettings
        The exported input settings.
    decision : dict
        The exported decision rule (``DecisionRule.to_dict()``, with its calibration).

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
        f"- Layer aggregation: `build_aggregator` {json.dumps(aggregator_arguments)}.",
        (
            f"- Back-end: `{type(backend).__module__}.{type(backend).__qualname__}` "
            f"{json.dumps(backend_kwargs)}, {n_params:,} parameters."
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
    lines += _decision_lines(decision)
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
