"""Reports written to disk: JSON, a Markdown table, and plots when matplotlib is installed."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from speechbrain_nes2net.evaluation.files import describe_protocol

_TITLES = {
    "ctrsvdd": "CtrSVDD",
    "asvspoof2021_la": "ASVspoof 2021 LA",
    "asvspoof2021_df": "ASVspoof 2021 DF",
    "asvspoof5": "ASVspoof 5",
    "in_the_wild": "In-the-Wild",
    "partialspoof": "PartialSpoof",
    "eer": "Spoofing detection",
}

# Column key, header, format; only the keys a block has are shown.
_COLUMNS = [
    ("n_bonafide", "bona fide", "{:d}"),
    ("n_spoof", "spoof", "{:d}"),
    ("eer", "EER (%)", "pct"),
    ("min_tdcf", "min t-DCF", "{:.4f}"),
    ("min_dcf", "minDCF", "{:.4f}"),
    ("act_dcf", "actDCF", "{:.4f}"),
    ("cllr", "Cllr (bits)", "{:.4f}"),
    ("ctrsvdd_min_dcf", "minDCF (CtrSVDD)", "{:.4f}"),
    ("eer_threshold", "EER threshold", "{:.4g}"),
]


def _cell(block, key, fmt):
    """One table cell: '-' for a metric the block lacks."""
    if key not in block:
        return "-"
    value = block[key]
    return f"{100 * value:.3f}" if fmt == "pct" else fmt.format(value)


def _table(rows, first_header):
    """A Markdown table of metric blocks; skipped groups get a note."""
    columns = [c for c in _COLUMNS if any(c[0] in block for _, block in rows)]
    headers = [first_header] + [header for _, header, _ in columns]
    with_notes = any("skipped" in block for _, block in rows)
    if with_notes:
        headers.append("note")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, block in rows:
        cells = [str(name)] + [_cell(block, key, fmt) for key, _, fmt in columns]
        if with_notes:
            cells.append(f"skipped: {block['skipped']}" if "skipped" in block else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(report):
    """Renders a report (of :func:`~speechbrain_nes2net.evaluation.reports.build_report`) as Markdown."""
    title = _TITLES.get(report["corpus"], report["corpus"])
    out = [
        f"# {title} evaluation report",
        "",
        f"- scores: `{report['scores_path']}`",
        f"- manifest: `{report['manifest_path']}`",
        f"- condition: {report['condition']}",
    ]
    if report.get("protocol"):
        out.append(f"- protocol: {describe_protocol(report['protocol'])}")
    out.append("")
    out += _table([("pooled", report)], "trials")
    if report.get("conditions"):
        out += ["", "## Conditions", ""]
        out += _table(list(report["conditions"].items()), "condition")
    if "segment" in report:
        out += ["", f"## Segment level ({report['segment']['shift']} s)", ""]
        out += _table([("segments", report["segment"])], "level")
    if "localization" in report:
        out += _localization_markdown(report["localization"])
    for factor, groups in report.get("breakdowns", {}).items():
        out += ["", f"## Per {factor}", ""]
        out += _table(list(groups.items()), factor)
    if "asv_rates" in report:
        rates = report["asv_rates"]
        out += ["", "## ASV error rates (t-DCF)", ""]
        out += [f"- {k}: {v:.6g}" for k, v in rates.items()]
    missing = report["missing"]
    out += [
        "",
        "## Missing",
        "",
        f"- manifest rows without a score (left out): {missing['manifest_rows_without_score']}",
        f"- scores without a manifest row (ignored): {missing['scores_without_manifest_row']}",
        f"- scores of rows that the corpus rule leaves out (ignored): {missing['scores_outside_selection']}",
        "",
        "## Definitions",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in report.get("definitions", {}).items()]
    return "\n".join(out) + "\n"


def _localization_markdown(block):
    """The per-resolution table of a localisation report."""
    out = [
        "",
        f"## Localisation (frame scores every {block['frame_shift']} s, {block['pooling']} over each segment)",
        "",
        "| resolution (s) | bona fide segments | spoof segments | segment EER (%) | range EER (%) |",
        "|---|---|---|---|---|",
    ]
    for shift, row in block["resolutions"].items():
        out.append(
            f"| {shift} | {row['n_bonafide']} | {row['n_spoof']} | {100 * row['eer']:.3f} | "
            f"{100 * row['range_eer']:.3f} |"
        )
    utterance = block["utterance_from_frames"]
    if "eer" in utterance:
        out += ["", f"- utterance EER of the minimum frame score: {100 * utterance['eer']:.3f}%"]
    out += [f"- range EER reference: {block['range_reference']}"]
    return out


def _json_default(value):
    """NumPy values and paths as JSON."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a report is not JSON data")


def write_report(report, out_dir, name):
    """Writes ``<name>_report.json``, ``<name>_report.md`` and the plots.

    The DET curve (``<name>_det.png``) and score histograms (``<name>_hist.png``,
    and ``<name>_hist_attacks.png`` per attack) are drawn when matplotlib is
    installed and the report carries its scores (``plot_data``).

    Arguments
    ---------
    report : Report
        Output of :func:`~speechbrain_nes2net.evaluation.reports.build_report`.
    out_dir : str or Path
        Folder, created if needed.
    name : str
        File name stem, e.g. ``ctrsvdd_test``.

    Returns
    -------
    dict
        ``json``, ``markdown`` and, when drawn, ``det``, ``histogram``,
        ``histogram_attacks`` -> written path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": out_dir / f"{name}_report.json",
        "markdown": out_dir / f"{name}_report.md",
    }
    with open(written["json"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, allow_nan=False, default=_json_default)
        handle.write("\n")
    written["markdown"].write_text(to_markdown(report), encoding="utf-8")

    data = getattr(report, "plot_data", None)
    if data is None:
        return written
    if plots_extra_note() is not None:
        return written  # said once, at the end of a run (see plots_extra_note)
    from speechbrain_nes2net.evaluation import plots

    title = f"{_TITLES.get(report['corpus'], report['corpus'])}: {report['condition']}"
    written["det"] = plots.plot_det(
        data["bonafide"], data["spoof"], out_dir / f"{name}_det.png", title=title
    )
    written["histogram"] = plots.plot_score_histograms(
        {"bona fide": data["bonafide"], "spoof": data["spoof"]},
        out_dir / f"{name}_hist.png",
        title=title,
    )
    if len(data["by_attack"]) > 1:
        written["histogram_attacks"] = plots.plot_score_histograms(
            {"bona fide": data["bonafide"], **data["by_attack"]},
            out_dir / f"{name}_hist_attacks.png",
            title=f"{title} (per attack)",
        )
    return written


def plots_extra_note():
    """What the optional ``plots`` extra would add, or None when it is installed.

    A run says it once, at its end, rather than once per report.

    Returns
    -------
    str or None

    Example
    -------
    >>> note = plots_extra_note()
    >>> note is None or "speechbrain-nes2net[plots]" in note
    True
    """
    if importlib.util.find_spec("matplotlib") is not None:
        return None
    return (
        "Reports were written without DET curves and score histograms; "
        "pip install 'speechbrain-nes2net[plots]' (matplotlib) adds them."
    )
