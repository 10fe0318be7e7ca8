"""The model card (``README.md``) of an export folder: :data:`.templates.CARD` filled in.

Authors
 * speechbrain-nes2net contributors
"""

import json

from speechbrain_nes2net.pretrained import templates

#: Licences of the SSL models the recipes use (the exported weights derive from them).
SSL_LICENCES = {
    "microsoft/wavlm-large": ("mit", (
        "WavLM-Large (microsoft/wavlm-large), released by Microsoft under the MIT licence "
        "(github.com/microsoft/unilm)"
    )),
    "facebook/wav2vec2-xls-r-300m": ("apache-2.0", (
        "wav2vec 2.0 XLS-R 300M (facebook/wav2vec2-xls-r-300m), released by Meta AI under the "
        "Apache 2.0 licence"
    )),
}  # fmt: skip

def decision_lines(decision, rates="the error rates at this threshold (bona fide rejection = "
                   "BPCER, spoof acceptance = APCER) are in the results below"):  # fmt: skip
    """The card's paragraphs on the calibration and the decision threshold.

    ``nes2net-calibrate`` rewrites them, with ``rates`` measured on the user's files.
    """
    calibration = decision["calibration"]
    fitted_on = decision.get("fitted_on") or "the development scores"
    lines = ["## Decisions", ""]
    if calibration is not None:
        lines += [
            (
                f"Calibration (fitted on {fitted_on}, shipped in `hyperparams.yaml`): "
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
            f"all decide this way; {rates}."
        ),
        "",
        (
            (
                "No threshold was fitted"
                if decision["source"] == "logit_0"
                else f"The threshold was fitted on {fitted_on}: it holds for audio like that"
            )
            + ". Recordings of another domain (microphones, channels, codecs, speakers, spoofing "
            "systems) shift the scores; fit it on a few dozen labelled files of that domain with "
            "`nes2net-calibrate --model <this folder> --labels list.csv --output <new folder>`."
        ),
        "",
    ]
    return lines


def _metrics_table(metrics):
    """The card's results table (rates in percent, '-' where unknown)."""
    lines = [
        (
            "| set | EER (%) | minDCF | bona fide rejected (%) | spoof accepted (%) "
            "| trials (bona fide / spoof) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    shown = lambda value, fmt: "-" if value is None else format(value, fmt)
    for name, values in metrics.items():
        rates = [shown(values.get(k) and 100 * values[k], ".2f") for k in ("eer", "bpcer", "apcer")]
        counts = "-"
        if values.get("n_bonafide") is not None:
            counts = f"{values['n_bonafide']} / {values['n_spoof']}"
        lines.append(f"| {name} | {rates[0]} | {shown(values.get('min_dcf'), '.4f')} | "
                     f"{rates[1]} | {rates[2]} | {counts} |")  # fmt: skip
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
    licence_id, licence_text = SSL_LICENCES.get(card.get("ssl_hub_id", ssl_hub_id), (
        "other", f"the SSL front-end ({ssl_source}): check its licence before redistributing"
    ))  # fmt: skip
    if card.get("licence_note"):
        licence_text = card["licence_note"]
    config = ssl.ssl.model.config
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
    sections = ""
    if card.get("origin"):
        sections += f"## Origin\n\n{card['origin']}\n\n"
    for key, heading in (("data", "Training data"), ("training", "Training settings")):
        if card.get(key):
            items = "".join(f"- {name}: {value}\n" for name, value in card[key].items())
            sections += f"## {heading}\n\n{items}\n"
    if card.get("metrics"):
        note = f"{card['metrics_note']}\n\n" if card.get("metrics_note") else ""
        sections += f"## Results\n\n{_metrics_table(card['metrics'])}\n\n{note}"
    return templates.CARD.format(
        licence_id=licence_id,
        title=card.get("title", "SSL + Nes2Net anti-spoofing model"),
        description=card.get("description", "Bona fide vs spoofed speech detection: a "
            "self-supervised speech model front-end, a layer aggregation and a Nes2Net back-end, "
            "trained with speechbrain-nes2net."),
        ssl_source=ssl_source, model_type=config.model_type,
        num_layers=config.num_hidden_layers, hidden_size=config.hidden_size, stored=stored,
        ssl_input="layer-normalised per waveform" if ssl.normalize else "fed as raw waveforms",
        aggregation=json.dumps(aggregator_arguments),
        backend_class=f"{type(backend).__module__}.{type(backend).__qualname__}",
        backend_arguments=json.dumps(backend_kwargs),
        n_params=sum(p.numel() for p in backend.parameters()),
        sample_rate=settings.sample_rate, evaluation=eval_text,
        decisions="\n".join(decision_lines(decision)), sections=sections, licence=licence_text,
        ssl_file="`ssl.ckpt`, " if ssl_hub_id is None else "",
    )  # fmt: skip
