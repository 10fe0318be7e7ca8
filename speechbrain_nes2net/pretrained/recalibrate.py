"""``nes2net-calibrate``: re-fit a model's decision on labelled files of the user's own domain.

Usage::

    nes2net-calibrate --model exports/my_model --labels my_files.csv --output exports/my_domain
    nes2net-calibrate --model model.onnx --labels my_data/ --output my_domain.onnx --cross-validate 5
    nes2net-calibrate --model exports/my_model --labels my_voices/ --bonafide-rejection 0.05 --output exports/mine

A threshold fitted on one domain does not carry to another. The labelled files
are scored by the corpus scoring engine (resumable in ``OUTPUT.scorelog``;
failed files reported and left out), a calibration and its Bayes threshold at
the bona fide prior are fitted on their raw scores, and the model is written
anew with only its decision changed: ``hyperparams.yaml``'s calibration and
decision, the card's decision section, and ``calibration_files.csv`` (ID,
label, SHA-256, raw score); an ``.onnx`` file gets them as metadata. Exit
status 2: refused (fewer than :data:`MIN_FILES_PER_CLASS` scored files of a
class, or scores that do not rise with bona fide-ness); 1: some files failed.

With ``--bonafide-rejection RATE`` only bona fide files are needed (a folder
may hold ``bonafide/`` alone): the model's calibration keeps its scale and is
shifted so that its threshold rejects at most RATE of them
(:func:`shift_to_bonafide_rate`); spoofed files, if given, are only reported.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from speechbrain_nes2net.evaluation.calibration import (
    DecisionRule,
    ScoreCalibration,
    fit_calibration,
)
from speechbrain_nes2net.evaluation.files import decision_rates
from speechbrain_nes2net.evaluation.metrics import compute_eer
from speechbrain_nes2net.evaluation.score_log import FAILED, ScoreLogError
from speechbrain_nes2net.pretrained.inputs import labelled_inputs

#: Scored files of each class a threshold needs at least.
MIN_FILES_PER_CLASS = 20
#: Least distance (relative to max(1, |score|)) between a ``--bonafide-rejection``
#: threshold and the lowest score it must accept: float32 LLRs and onnxruntime
#: (1.8e-7 from torch, docs/DEPLOYING.md) must not turn that file into a tie or a reject.
DECISION_MARGIN = 1e-4
#: The file of a re-calibrated folder that lists the files its decision was fitted on.
FILES_RECORD = "calibration_files.csv"


class CalibrationError(ValueError):
    """Files that cannot give a decision threshold; the message says what is needed."""


def check_counts(n_bona, n_spoof, what, bonafide_rate=None):
    """Refuses fewer than :data:`MIN_FILES_PER_CLASS` files of a class (``what`` names them).

    With ``bonafide_rate`` (``--bonafide-rejection``), spoofs are not needed,
    and bona fide files at least 1 / rate, so that the rate is one file or more.

    Example
    -------
    >>> check_counts(25, 0, "list.csv")
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.pretrained.recalibrate.CalibrationError: list.csv holds 25 bona fide and 0 spoof files; a threshold between the classes needs at least 20 of each (more: a steadier one, see --cross-validate; with bona fide files only: --bonafide-rejection)
    >>> check_counts(25, 0, "list.csv", bonafide_rate=0.05)
    >>> check_counts(25, 0, "list.csv", bonafide_rate=0.01)
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.pretrained.recalibrate.CalibrationError: list.csv holds 25 bona fide files; rejecting at most 1% of them needs at least 100
    """
    if bonafide_rate is not None:
        needed = max(MIN_FILES_PER_CLASS, math.ceil(1 / bonafide_rate - 1e-9))
        if n_bona < needed:
            raise CalibrationError(
                f"{what} holds {n_bona} bona fide files; rejecting at most "
                f"{100 * bonafide_rate:.3g}% of them needs at least {needed}"
            )
        return
    if min(n_bona, n_spoof) < MIN_FILES_PER_CLASS:
        raise CalibrationError(
            f"{what} holds {n_bona} bona fide and {n_spoof} spoof files; a threshold between the "
            f"classes needs at least {MIN_FILES_PER_CLASS} of each (more: a steadier one, see "
            "--cross-validate; with bona fide files only: --bonafide-rejection)"
        )


def fit_decision(bona, spoof, prior, fitted_on=None):
    """The calibration of raw scores and its Bayes threshold at ``prior``.

    Example
    -------
    >>> rule = fit_decision(np.linspace(0, 2, 30), np.linspace(-2, 0.5, 30), 0.5)
    >>> rule.source, round(rule.threshold, 2)
    ('calibration', 0.21)
    >>> fit_decision(np.linspace(-2, 0.5, 30), np.linspace(0, 2, 30), 0.5)
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.pretrained.recalibrate.CalibrationError: the model scores these bona fide files no higher than the spoofed ones ...
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separated classes still give a threshold in the gap
        calibration = fit_calibration(bona, spoof, prior=prior)
    if calibration.scale <= 0:
        raise CalibrationError(
            "the model scores these bona fide files no higher than the spoofed ones "
            f"(calibration scale {calibration.scale:.3g}): it does not separate this domain, "
            "and no threshold can fix that"
        )
    return DecisionRule.from_calibration(calibration, prior, fitted_on)


def require_calibration(old):
    """Refuses a decision without a calibration for ``--bonafide-rejection`` (nothing to shift)."""
    if old.calibration is None:
        raise CalibrationError(
            f"the model ships no calibration to shift (its threshold is {old.source!r}): fit one "
            "on labelled files of both classes, without --bonafide-rejection"
        )


def shift_to_bonafide_rate(old, bona, rate, prior, fitted_on=None):
    """``old``'s calibration shifted so that its Bayes threshold rejects at most ``rate`` of ``bona``.

    A new domain mostly shifts a detector's scores; without spoofed files the
    spread between the classes cannot be re-fitted, so the scale is kept and
    the offset moves the threshold below the lowest bona fide score that
    stays accepted (the ``floor(rate x n)``-th lowest, counted from 0): midway
    to the next lower score, and at least :data:`DECISION_MARGIN` below it, so
    that every engine (float32 LLRs, onnxruntime) accepts that file too.

    Arguments
    ---------
    old : DecisionRule
        The model's decision, with a calibration.
    bona : array-like
        Raw scores of the user's bona fide files.
    rate : float
        Most bona fide files to reject, in (0, 1).
    prior : float
        Bona fide prior of the new decision.
    fitted_on : str, optional
        What it was fitted on.

    Returns
    -------
    DecisionRule

    Example
    -------
    >>> old = DecisionRule.from_calibration(ScoreCalibration(scale=2.0, offset=1.0))
    >>> rule = shift_to_bonafide_rate(old, np.arange(100.0), 0.05, 0.5)
    >>> int((~rule.is_bonafide(np.arange(100.0))).sum()), rule.calibration.scale
    (5, 2.0)
    >>> bona = [-40.0, -30.857142857142858] + [0.0] * 18  # the second: float rounding would reject it
    >>> old = DecisionRule.from_calibration(ScoreCalibration(scale=0.37, offset=0.0))
    >>> int((~shift_to_bonafide_rate(old, bona, 0.05, 0.5).is_bonafide(bona)).sum())
    1
    """
    require_calibration(old)
    scores = np.sort(np.asarray(bona, dtype=np.float64))
    k = min(math.floor(rate * scores.size + 1e-9), scores.size - 1)
    margin = DECISION_MARGIN * max(1.0, abs(scores[k]))
    threshold = min((scores[max(k - 1, 0)] + scores[k]) / 2, scores[k] - margin)
    scale = old.calibration.scale
    offset = -math.log(prior / (1 - prior)) - scale * threshold
    calibration = ScoreCalibration(scale, offset, prior=old.calibration.prior)
    return DecisionRule.from_calibration(calibration, prior, fitted_on)


def cross_validate(bona, spoof, prior, folds, seed=0):
    """Held-out rates: each class shuffled into ``folds``, each decided by a rule fitted on the rest.

    Returns
    -------
    dict
        ``bpcer`` (bona fide rejected) and ``apcer`` (spoofs accepted) over all held-out files.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> rates = cross_validate(rng.normal(1, 1, 200), rng.normal(-1, 1, 200), 0.5, 5)
    >>> all(0.1 < rate < 0.25 for rate in rates.values())  # each ~0.16 in theory
    True
    """
    rng = np.random.default_rng(seed)
    parts = [np.array_split(rng.permutation(np.asarray(x, float)), folds) for x in (bona, spoof)]
    rejected = accepted = 0
    for k in range(folds):
        rule = fit_decision(*[np.concatenate(p[:k] + p[k + 1 :]) for p in parts], prior)
        rejected += int((~rule.is_bonafide(parts[0][k])).sum())
        accepted += int(rule.is_bonafide(parts[1][k]).sum())
    return {"bpcer": rejected / len(bona), "apcer": accepted / len(spoof)}


def model_decision(model):
    """The decision rule of an export folder or ``.onnx`` file (read, not loaded)."""
    if str(model).lower().endswith(".onnx"):
        from speechbrain_nes2net.pretrained.onnx_model import read_metadata

        return DecisionRule.from_dict(read_metadata(model)["decision"])
    text = (Path(model) / "hyperparams.yaml").read_text(encoding="utf-8")
    found = re.search(r"^decision: (.*)$", text, flags=re.MULTILINE)
    if not found:
        raise CalibrationError(f"{model}: hyperparams.yaml has no decision (re-export the model)")
    return DecisionRule.from_dict(json.loads(found.group(1)))


def _replace_once(pattern, line, text, where):
    text, count = re.subn(pattern, lambda _: line, text, count=1, flags=re.MULTILINE | re.DOTALL)
    if not count:
        raise CalibrationError(f"{where} has no {pattern!r}: not an export of this toolkit")
    return text


def write_recalibrated(model, output, rule, files, rates):
    """Writes ``model`` (folder or ``.onnx`` file) to ``output`` with ``rule`` as its decision.

    Staged, read back, then renamed. ``files``: ``(ID, label, SHA-256, raw
    score, failure)`` of each labelled file; ``rates``: the card's clause on them.
    """
    decision = rule.to_dict()
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    target = staging / output.name
    try:
        if model.is_file():
            import onnx

            proto = onnx.load(str(model), load_external_data=False)
            props = {entry.key: entry.value for entry in proto.metadata_props}
            onnx.helper.set_model_props(proto, {
                **props, "nes2net.calibration": json.dumps(decision["calibration"]),
                "nes2net.decision": json.dumps(decision),
                "nes2net.calibration_files": json.dumps([row[:3] for row in files]),
            })  # fmt: skip
            onnx.save(proto, str(target))
        else:
            from speechbrain_nes2net.pretrained import export
            from speechbrain_nes2net.pretrained.card import decision_lines

            shutil.copytree(model, target)
            yaml, card = target / "hyperparams.yaml", target / "README.md"
            text = yaml.read_text(encoding="utf-8")
            for key in ("calibration", "decision"):
                value = export.yaml_value(decision if key == "decision" else decision[key])
                text = _replace_once(f"^{key}: [^\\n]*", f"{key}: {value}", text, yaml.name)
            yaml.write_text(text, encoding="utf-8")
            section = "\n".join(decision_lines(decision, rates)) + "\n"
            card.write_text(
                _replace_once(r"^## Decisions\n.*?(?=^## )", section, card.read_text(), card.name)
            )
            with open(target / FILES_RECORD, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle, lineterminator="\n").writerows(
                    [("ID", "label", "sha256", "score", "failure"), *files]
                )
        if model_decision(target) != rule:
            raise CalibrationError(f"{output} does not read back the decision it was given")
        os.replace(target, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_args(argv=None):
    """Parses the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="nes2net-calibrate",
        description="Re-fit a model's calibration and threshold on labelled files of your "
        "domain; writes a new model that differs only in its decision.",
    )
    parser.add_argument("--model", required=True, help="exported model folder or .onnx file")
    parser.add_argument(
        "--labels", required=True, nargs="+", metavar=("LIST", "AUDIO_DIR"),
        help="a list file with columns path,label (CSV; TSV for other suffixes) and optionally "
        "the folder its paths start from (default: the list's); or a folder of bonafide/ and spoof/ "
        "(bonafide/ alone with --bonafide-rejection)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="the new model folder (or .onnx file)")
    parser.add_argument("--prior", type=float, help="bona fide prior (default: the model's)")
    parser.add_argument("--cross-validate", type=int, metavar="K", help="rates on K held-out folds")
    parser.add_argument(
        "--bonafide-rejection", type=float, metavar="RATE",
        help="fit on bona fide files only: shift the model's calibration so that at most RATE "
        "(e.g. 0.05) of them are rejected, whatever --prior says (it sets the posteriors); "
        "spoofed files, if listed, are only reported",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, help="files per batch (default: as nes2net-score)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument("--restart", action="store_true", help="ignore OUTPUT.scorelog")
    args = parser.parse_args(argv)
    args.model, args.output = Path(args.model).expanduser(), Path(args.output).expanduser()
    args.engine = "onnxruntime" if args.model.suffix.lower() == ".onnx" else "torch"
    for wrong, message in (
        (len(args.labels) > 2, "--labels takes a list and, optionally, the folder its paths start from"),
        (args.prior is not None and not 0 < args.prior < 1, "--prior must be between 0 and 1"),
        ((args.cross_validate or 2) < 2, "--cross-validate needs K >= 2 folds"),
        (args.bonafide_rejection is not None and not 1e-6 <= args.bonafide_rejection <= 0.5,
         "--bonafide-rejection must be between 0.000001 and 0.5"),
        (args.bonafide_rejection is not None and args.cross_validate,
         "--cross-validate needs both classes; --bonafide-rejection fits on bona fide files only"),
        (not args.model.exists(), f"--model {args.model}: no such export folder or .onnx file"),
        ((args.engine == "onnxruntime") != (args.output.suffix.lower() == ".onnx"),
         "--output is an .onnx file when --model is one, else a folder"),
        (args.output.exists(), f"--output {args.output} exists: name a new model"),
    ):  # fmt: skip
        if wrong:
            parser.error(message)
    # What score_cli's model loader and score log header read.
    args.precision, args.raw, args.threads, args.savedir = "fp32", True, None, None
    args.condition, args.compile = None, False
    return args


def score_labelled(args, items):
    """Raw scores and failure reasons of the labelled files, by ID, and the score log."""
    from speechbrain_nes2net.pretrained import score_cli
    from speechbrain_nes2net.pretrained.corpus_scoring import CorpusScoring

    header = dict(score_cli.log_header(args), tool="nes2net-calibrate")
    iter_items = lambda: ((utt_id, path) for utt_id, path, _ in items)
    log_path = score_cli.log_path_of(args.output)
    scoring = CorpusScoring(iter_items, log_path, header, restart=args.restart)
    if scoring.needs_scoring():
        model = score_cli.load_model(args)  # sets the default --batch-size
        scoring.score(model, args.batch_size, calibrated=False)
    scores, failed = {}, {}
    for _, utt_id, status, fields in scoring.merged():
        if status == FAILED:
            failed[utt_id] = fields[0]
        else:
            scores[utt_id] = float(fields[0])
    return scores, failed, scoring.log.path


def calibrate(args):
    """Runs ``nes2net-calibrate``; returns the exit status."""
    say = lambda text: print(f"nes2net-calibrate: {text}", file=sys.stderr)
    labels = Path(args.labels[0]).expanduser()
    items = labelled_inputs(labels, *args.labels[1:])
    label_of = {utt_id: label for utt_id, _, label in items}
    listed, rate = list(label_of.values()), args.bonafide_rejection
    check_counts(listed.count("bonafide"), listed.count("spoof"), str(labels), rate)
    old = model_decision(args.model)
    if rate is not None:  # refused before hours of scoring
        require_calibration(old)
    scores, failed, log_path = score_labelled(args, items)
    for utt_id, path, _ in items:
        if utt_id in failed:
            say(f"cannot score {path} ({utt_id}): {failed[utt_id]}")
    if not scores:
        raise CalibrationError(f"all {len(items)} files failed (reasons above): nothing to fit on")
    bona, spoof = (np.array([s for i, s in scores.items() if label_of[i] == label])
                   for label in ("bonafide", "spoof"))  # fmt: skip
    check_counts(bona.size, spoof.size, f"{labels} (scored files only)", rate)
    prior = old.prior if args.prior is None else args.prior
    today = datetime.date.today().isoformat()
    if rate is None:
        fitted_on = (f"{bona.size} bona fide and {spoof.size} spoof files of {labels.name} "
                     f"(nes2net-calibrate, {today})")  # fmt: skip
        rule = fit_decision(bona, spoof, prior, fitted_on)
    else:
        fitted_on = (f"{bona.size} bona fide files of {labels.name}, shifted to reject at most "
                     f"{100 * rate:.3g}% of them (nes2net-calibrate --bonafide-rejection, {today})")
        rule = shift_to_bonafide_rate(old, bona, rate, prior, fitted_on)
    before, after = decision_rates(old, bona, spoof), decision_rates(rule, bona, spoof)
    # A rate of a class without files is NaN: shown as "-".
    cell = lambda x, width: f"{'-':>{width + 1}}" if math.isnan(x) else f"{100 * x:{width}.2f}%"
    row = lambda name, r: f"{name:24}{cell(r['bpcer'], 19)}{cell(r['apcer'], 15)}"
    eer = f"EER {100 * compute_eer(bona, spoof)[0]:.2f}%" if spoof.size else "no spoofs: no EER"
    lines = [(f"scored {len(scores)} of {len(items)} files ({bona.size} bona fide, {spoof.size} "
              f"spoof): {eer}"),
             f"{'':24}{'bona fide rejected':>20}{'spoof accepted':>16}",
             row(f"old threshold {old.threshold:.4g}", before),
             row(f"new threshold {rule.threshold:.4g}", after)]  # fmt: skip
    if args.cross_validate:
        folds = cross_validate(bona, spoof, prior, args.cross_validate)
        lines.append(row(f"held out ({args.cross_validate} folds)", folds))
    if spoof.size:
        fitted = "the files it was fitted on" if rate is None else "the files it was given"
        rates = (f"on {fitted}, it rejects {100 * after['bpcer']:.2f}% of bona "
                 f"fide and accepts {100 * after['apcer']:.2f}% of spoofs (the previous threshold "
                 f"{old.threshold:.6g}: {100 * before['bpcer']:.2f}% and "
                 f"{100 * before['apcer']:.2f}%")  # fmt: skip
    else:
        rates = (f"on the bona fide files it was fitted on, it rejects {100 * after['bpcer']:.2f}% "
                 "(no spoofed files were given, so how many spoofs it accepts there is unmeasured; "
                 f"the previous threshold {old.threshold:.6g}: {100 * before['bpcer']:.2f}%")
    rates += (f"; any results below were measured at it); `{FILES_RECORD}` lists those files "
              "with their SHA-256")
    files = [(utt_id, label, hashlib.sha256(path.read_bytes()).hexdigest(), repr(scores[utt_id]), "")
             if utt_id in scores else (utt_id, label, "", "", failed[utt_id])
             for utt_id, path, label in items]  # fmt: skip
    write_recalibrated(args.model, args.output, rule, files, rates)
    log_path.unlink()
    print("\n".join(lines))
    say(f"wrote {args.output}: bona fide when the raw score >= {rule.threshold:.6g}")
    errors = lambda r: r["bpcer"] + r["apcer"]  # noqa: E731
    if spoof.size and errors(after) > errors(before):
        say("the old threshold makes fewer errors on these files: the new one is the Bayes "
            "decision of a calibration fitted to them, not the fewest errors; where these files "
            "are not your domain, or too few to fit (see --cross-validate), keep the old model")  # fmt: skip
    if failed:
        say(f"{len(failed)} of {len(items)} files failed and were left out (listed above)")
    return 1 if failed else 0


def main(argv=None):
    """Command line entry point; returns the exit status (0 ok, 1 some files failed, 2 refused)."""
    args = parse_args(argv)
    try:
        return calibrate(args)
    except (ValueError, ScoreLogError) as err:  # CalibrationError and InputError among them
        print(f"nes2net-calibrate: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
