"""``nes2net-app``: a web page (Gradio) that scores audio files with an exported model.

Usage::

    nes2net-app --model path/to/export            # then open http://127.0.0.1:7860
    nes2net-app --model model.onnx --port 8080    # an nes2net-export-onnx file
    nes2net-app --model path/to/export --write-space space/   # a Hugging Face Space

Per recorded or uploaded file: the score, decision, posterior probability of
bona fide at the decision's prior and, for localisation models, the frame
scores with the spoofed ranges; the model card's error rates at the threshold;
a CSV. Scoring is ``nes2net-score``'s (``load_model``, ``score_files``,
``localize``; ``--precision auto``: bf16 where native). The page fetches
nothing from other hosts and listens on 127.0.0.1 unless ``--host`` (or
``GRADIO_SERVER_NAME``, as Hugging Face Spaces set it) says otherwise.
docs/DEPLOYING.md describes the page and the Space.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import csv
import html
import math
import os
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from speechbrain_nes2net.audio import AudioError
from speechbrain_nes2net.precision import PRECISIONS
from speechbrain_nes2net.pretrained.card import card_error_rates

#: The model card of an export folder (for an ``.onnx`` file: the one beside it, if any).
CARD = "README.md"
#: Column headings of the page's table, where they differ from the CSV's.
HEADINGS = {"label": "decision", "p_bonafide": "P(bona fide)", "spoofed_ranges": "spoofed (s)"}

SPACE_APP = '''"""A Hugging Face Space: nes2net-app on the model beside this file."""

from pathlib import Path

from speechbrain_nes2net.pretrained.app import main

main(["--model", str(Path(__file__).parent / "{model}")])
'''
SPACE_README = """---
title: {title}
sdk: gradio
sdk_version: {gradio}
app_file: app.py
---

Scores audio files with a speechbrain-nes2net model: its card is `model/README.md`.
"""


def parse_args(argv=None):
    """Parses the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="nes2net-app",
        description="A web page that scores audio files with an exported speechbrain-nes2net "
        "model (higher = more bona fide).",
    )
    parser.add_argument("--model", required=True, help="exported model folder or .onnx file")
    # fmt: off
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1: this machine only)")
    port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    parser.add_argument("--port", type=int, default=port,
                        help=f"port to listen on (default {port}; GRADIO_SERVER_PORT sets it)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="torch engine (default auto: bf16 where the CPU/GPU has it natively)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads of the engine")
    parser.add_argument("--savedir", help="where SpeechBrain collects the model files")
    parser.add_argument("--write-space", metavar="FOLDER",
                        help="write a Hugging Face Space of the model to FOLDER and exit")
    # fmt: on
    args = parser.parse_args(argv)
    # What nes2net-score's load_model reads; an ONNX graph runs at its own precision.
    args.engine = "onnxruntime" if args.model.lower().endswith(".onnx") else "torch"
    args.precision = "fp32" if args.engine == "onnxruntime" else args.precision
    args.batch_size, args.condition, args.compile = None, None, False
    return args


def posterior(rule, score):
    """P(bona fide) at the decision's prior of a calibrated score (None without a calibration).

    Example
    -------
    >>> from speechbrain_nes2net.evaluation.calibration import DecisionRule, ScoreCalibration
    >>> rule = DecisionRule.from_calibration(ScoreCalibration(scale=2.0, offset=0.0), prior=0.2)
    >>> round(posterior(rule, math.log(4.0)), 6)
    0.5
    >>> posterior(DecisionRule(0.3, source="dev_eer"), 1.0) is None
    True
    """
    if rule is None or rule.calibration is None or score is None:
        return None
    log_odds = score + math.log(rule.prior / (1 - rule.prior))
    return 0.5 * (1 + math.tanh(log_odds / 2))


def score_uploads(model, paths, batch_size):
    """Per file, as ``nes2net-score`` scores it: a dict of ``file``, ``score``, ``label``,
    ``p_bonafide``, ``error`` (None or why it failed) and, when the model localises,
    ``ranges`` (TimeRange list) and ``frames`` (FrameScores)."""
    rows = []
    for path, result in zip(paths, model.score_files(paths, batch_size=batch_size)):
        name = Path(path).name
        # nes2net-score's reason, naming the file as the user knows it (not the upload's copy).
        error = result.error and result.error.replace(str(path), name)
        rows.append({"file": name, "score": result.score, "label": result.label, "error": error,
                     "p_bonafide": posterior(model.decision, result.score)})  # fmt: skip
        if result.ok and getattr(model, "localizes", False):
            try:
                rows[-1]["ranges"], rows[-1]["frames"] = model.localize(path, return_frames=True)
            except (AudioError, OSError, RuntimeError) as err:
                rows[-1]["error"] = str(err)
    return rows


def cells(row):
    """The text of a result row, by column (``spoofed_ranges``: localisation models only).

    Example
    -------
    >>> from speechbrain_nes2net.evaluation.localization import TimeRange
    >>> cells({"file": "a.wav", "score": -1.5, "label": "spoof", "p_bonafide": None,
    ...        "error": None, "ranges": [TimeRange(0.0, 0.16, "spoof"), TimeRange(0.16, 1.0)]})
    {'file': 'a.wav', 'score': '-1.500000', 'label': 'spoof', 'p_bonafide': '',
     'spoofed_ranges': '0-0.16', 'error': ''}
    """
    number = lambda value, digits: "" if value is None else f"{value:.{digits}f}"
    text = {"file": row["file"], "score": number(row["score"], 6), "label": row["label"] or "",
            "p_bonafide": number(row["p_bonafide"], 4)}  # fmt: skip
    if "ranges" in row:
        spans = [f"{r.start:g}-{r.end:g}" for r in row["ranges"] if r.label == "spoof"]
        text["spoofed_ranges"] = "; ".join(spans) or "none"
    return text | {"error": row["error"] or ""}


def decision_html(rule, card_rows):
    """What the decisions mean: the threshold, and the model card's error rates at it."""
    if rule is None:
        return "<p>This model ships no decision rule: scores only.</p>"
    how = {"calibration": f"the Bayes decision of the calibrated score at a bona fide prior of "
                          f"{rule.prior:g}",
           "dev_eer": "the development set's equal-error threshold (no calibration: no posterior)",
           "logit_0": "the raw score's sign: no threshold was fitted"}[rule.source]  # fmt: skip
    rates = "".join(
        f"<li>{html.escape(row['set'])}: {100 * row['bpcer']:.2f}% of bona fide rejected, "
        f"{100 * row['apcer']:.2f}% of spoofs accepted ({html.escape(row['trials'])} trials)</li>"
        for row in card_rows
        if row["bpcer"] is not None and row["apcer"] is not None
    )
    rates = (f"<p>At this threshold the model card reports:</p><ul class='rates'>{rates}</ul>"
             if rates else "<p>The model card reports no error rates at this threshold.</p>")
    return f"<p>Bona fide when the raw score is at least {rule.threshold:.6g}: {how}.</p>{rates}"


def result_html(rows, rule, card_rows):
    """The result of one request: the table, the decision rule, the localisation plots."""
    from speechbrain_nes2net.evaluation.plots import frame_scores_svg

    table = [cells(row) for row in rows]
    heads = "".join(f"<th>{HEADINGS.get(key, key)}</th>" for key in table[0])
    lines = [f"<table id='scores'><tr>{heads}</tr>"]
    for text in table:
        row = "".join(f"<td class='{key}'>{html.escape(value)}</td>" for key, value in text.items())
        lines.append(f"<tr>{row}</tr>")
    lines.append("</table>" + decision_html(rule, card_rows))
    for row, text in zip(rows, table):
        if "frames" in row:
            svg = frame_scores_svg(row["frames"].times, row["frames"].scores, row["ranges"])
            name = html.escape(row["file"])
            lines.append(f"<figure class='frames' data-file='{name}'><figcaption>{name}: spoofed "
                         f"{text['spoofed_ranges']}</figcaption>{svg}</figure>")  # fmt: skip
    return "\n".join(lines)


def build_page(model, args, card):
    """The Gradio page of a loaded model and its card's text (gradio is imported here only)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    card_rows = card_error_rates(card)
    titles = [line[2:] for line in card.splitlines() if line.startswith("# ")]
    title = html.escape(titles[0] if titles else Path(args.model).name)
    kind = "localisation" if getattr(model, "localizes", False) else "detection"
    header = (
        f"## Bona fide or spoofed?\n\n{title} ({kind} model; {args.engine}, {model.precision}). "
        "Record or upload audio files (any format, rate and channel count) and press **Score**. "
        "Higher scores are more bona fide."
    )

    def score(recorded, uploaded):
        """The Score button: the result HTML and the CSV of the recording and the uploads."""
        paths = ([recorded] if recorded else []) + list(uploaded or [])
        if not paths:
            return "<p>Record or upload a file first.</p>", None
        rows = score_uploads(model, paths, args.batch_size)
        table = Path(tempfile.mkdtemp(prefix="nes2net-app-")) / "scores.csv"
        with open(table, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(cells(rows[0])), lineterminator="\n")
            writer.writeheader()
            writer.writerows(cells(row) for row in rows)
        return result_html(rows, model.decision, card_rows), str(table)

    with gr.Blocks(title="nes2net", analytics_enabled=False) as page:
        gr.Markdown(header)
        with gr.Row():
            recorded = gr.Audio(sources="microphone", type="filepath", label="Record",
                                elem_id="record")  # fmt: skip
            uploaded = gr.File(file_count="multiple", label="Audio files", elem_id="upload")
        button = gr.Button("Score", variant="primary", elem_id="score-button")
        result = gr.HTML(elem_id="result")
        table = gr.File(label="Scores (CSV)", elem_id="csv")
        button.click(score, [recorded, uploaded], [result, table])
    return page


def write_space(model, folder):
    """Writes a Hugging Face Space serving ``model`` (an export folder or ``.onnx`` file):
    ``folder/model/`` (the model; an ``.onnx`` file with the card beside it), ``app.py``,
    ``requirements.txt`` and the Space's ``README.md``. Returns ``folder``."""
    model, folder = Path(model), Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty: choose a new folder")
    onnx = model.suffix.lower() == ".onnx" and model.is_file()
    if not (model.is_dir() or onnx):
        raise FileNotFoundError(f"{model}: not an exported model folder or .onnx file")
    if onnx:
        (folder / "model").mkdir(parents=True)
        for path in [model, model.parent / CARD]:
            if path.is_file():
                shutil.copy2(path, folder / "model" / path.name)
    else:
        shutil.copytree(model, folder / "model")
    served = f"model/{model.name}" if onnx else "model"
    extras = "app,onnx" if onnx else "app"
    readme = SPACE_README.format(title=model.stem[:30], gradio=version("gradio"))
    files = {"app.py": SPACE_APP.format(model=served), "README.md": readme,
             "requirements.txt": f"speechbrain-nes2net[{extras}]\n"}  # fmt: skip
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def main(argv=None):
    """Runs the page until interrupted; returns the exit status (2: the model does not load)."""
    args = parse_args(argv)
    try:  # before anything is loaded or written
        version("gradio")
    except PackageNotFoundError:
        print("nes2net-app: the web page needs gradio: pip install 'speechbrain-nes2net[app]'",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.write_space:
        try:
            print(f"nes2net-app: wrote {write_space(args.model, args.write_space)}")
        except (OSError, ValueError) as err:
            print(f"nes2net-app: {err}", file=sys.stderr)
            return 2
        return 0
    from speechbrain_nes2net.pretrained.score_cli import load_model

    try:
        model = load_model(args)
    except Exception as err:  # noqa: BLE001  (any loading failure is a usage problem)
        print(f"nes2net-app: cannot load the model {args.model}: {err}", file=sys.stderr)
        return 2
    card = (Path(args.model) if args.engine == "torch" else Path(args.model).parent) / CARD
    card = card.read_text(encoding="utf-8") if card.is_file() else ""
    # One request at a time: the model is shared, and a CPU is busy with one file anyway.
    page = build_page(model, args, card).queue(default_concurrency_limit=1)
    page.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
