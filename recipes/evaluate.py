#!/usr/bin/env python3
"""Scores a trained run on any prepared manifest; writes scores, metrics and a report.

Usage::

    # In-the-Wild with a model trained on ASVspoof 2019 LA (full utterances)
    python recipes/evaluate.py results/nes2net_x_asvspoof2019/12345/hyperparams.yaml \\
        --test_manifest=manifests/in_the_wild_eval.csv --test_name=in_the_wild \\
        --report=in_the_wild

    # ASVspoof 2021 DF, first 4 s, average of the best 5 checkpoints, 4 processes
    torchrun --standalone --nproc_per_node=4 recipes/evaluate.py \\
        results/nes2net_x_asvspoof2019/12345/hyperparams.yaml \\
        --test_manifest=manifests/asvspoof2021_df_eval.csv --test_name=df_eval \\
        --eval_samples=64600 --report=asvspoof2021_df --average_checkpoints=5

The run's checkpoint (chosen as its test evaluation chooses it) scores the
manifest as its export would
(:meth:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel.from_modules`),
through the resumable, sharded corpus engine of ``nes2net-score``
(:mod:`speechbrain_nes2net.pretrained.corpus_scoring`); a rerun scores only
what its logs lack. ``<output_folder>/scores/`` receives
``<test_name>_scores.txt``, ``_metrics.json``, ``_failed.csv`` and the report.
``--compile`` compiles the SSL model with ``torch.compile`` first (a minute or two
for a Large model: for long jobs). Other ``--key=value`` arguments override the
YAML, as in ``train.py``.
See docs/EVALUATION.md and docs/SCALE.md.
Robustness: ``--condition=mp3_32k`` passes every file through that codec or
channel first (:mod:`speechbrain_nes2net.codecs`; outputs ``<test_name>_mp3_32k_*``);
``--conditions=all`` (or a comma-separated list) scores the uncoded files and each
condition in turn, and writes EER and minDCF per condition to
``<test_name>_conditions.md`` and ``.json`` (docs/ROBUSTNESS.md).

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# The recipe YAMLs name their corpus scripts as ``!name:data_prep.<corpus>_prepare...``
# and data_prep/ is not installed (only the library is): as SpeechBrain's recipes do
# with their prepare scripts, put the repository root on sys.path, so that the YAMLs
# load from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.codecs import resolve_conditions
from speechbrain_nes2net.evaluation.files import (
    read_decision,
    score_summary,
    scoring_protocol,
    write_test_outputs,
)
from speechbrain_nes2net.evaluation.report_writer import plots_extra_note
from speechbrain_nes2net.evaluation.reports import write_corpus_report
from speechbrain_nes2net.evaluation.score_log import DEFAULT_CHUNK_SIZE, FAILED, ScoreLogError
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.precision import PRECISIONS, resolve_precision
from speechbrain_nes2net.pretrained.corpus_scoring import CorpusScoring, resolve_shard
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.model_identity import parameter_fingerprint
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.scores import LABEL_IDS
from speechbrain_nes2net.training.checkpoints import (
    MODEL_MODULES,
    CheckpointSelectionError,
    evaluation_checkpoints,
    load_checkpoint_average,
)
from speechbrain_nes2net.training.config import check_run_options
from speechbrain_nes2net.training.recipe import TestSet, finish_distributed

logger = logging.getLogger(__name__)


def parse(argv):
    """Splits the command line into this script's options and SpeechBrain's."""
    parser = argparse.ArgumentParser(
        usage="%(prog)s HYPERPARAMS_YAML --test_manifest CSV --test_name NAME [options] "
        "[--key=value ...]",
        description=__doc__.split("\n\n")[0],
        epilog="HYPERPARAMS_YAML: the hyperparams.yaml a training run saved in its output "
        "folder. Other --key=value arguments override the YAML as in train.py (e.g. "
        "--average_checkpoints=5, --device=cuda:0), with SpeechBrain's run options.",
        add_help=True,
        allow_abbrev=False,
    )
    parser.add_argument("--test_manifest", required=True, help="manifest CSV to score")
    parser.add_argument("--test_name", required=True, help="name of the output files")
    parser.add_argument(
        "--eval_samples", type=int, default=None,
        help="score the first N samples (repeat-padded), e.g. 64600; full utterances if unset",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS,
        help="fp32, bf16 (the SSL front-end in bfloat16), or auto (bf16 where the CPU/GPU "
        "computes it natively); as SpeechBrain's --eval_precision (default: that run "
        "option, else fp32)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the SSL model first (a minute or two for a Large model; pays on "
        "long jobs, see docs/DEPLOYING.md)",
    )  # fmt: skip
    parser.add_argument("--report", default=None, help="corpus rules of the report (e.g. ctrsvdd)")
    parser.add_argument(
        "--report_option", action="append", default=[], metavar="KEY=VALUE",
        help="a report option, repeatable (e.g. keys_dir=/data/ASVspoof2021/keys)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard the score logs and score everything again"
    )
    parser.add_argument(
        "--retry_failed", action="store_true", help="score unusable files of earlier runs again"
    )
    parser.add_argument(
        "--chunk_size", type=int, default=DEFAULT_CHUNK_SIZE,
        help=f"manifest rows planned and held at once (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument(
        "--shard", default=None, metavar="R/N",
        help="without torchrun: score shard R of N (0-based) only; outputs once all are done",
    )
    coded = parser.add_mutually_exclusive_group()
    coded.add_argument(
        "--condition", metavar="NAME",
        help="pass every file through this codec or channel first (e.g. mp3_32k)",
    )  # fmt: skip
    coded.add_argument(
        "--conditions", metavar="LIST",
        help="'all' or comma-separated conditions: score the uncoded files, then each condition",
    )  # fmt: skip
    return parser.parse_known_args(argv)


def evaluated_conditions(args):
    """The conditions to score in turn: None (uncoded), ``--condition``, or None then ``--conditions``."""
    try:
        if args.condition:
            return resolve_conditions([args.condition])
        return [None] + (resolve_conditions(args.conditions) if args.conditions else [])
    except (ValueError, ImportError) as err:
        raise SystemExit(f"evaluate.py: {err}") from None


def write_condition_table(folder, name, summaries):
    """``<name>_conditions.json`` and ``.md``: EER and minDCF under each condition."""
    rows = [
        {"condition": condition or "none", "eer": s["eer"], "min_dcf": s["min_dcf"],
         "n_scored": s["n_bonafide"] + s["n_spoof"], "n_failed": s["n_failed"]}
        for condition, s in summaries.items()
    ]  # fmt: skip
    (folder / f"{name}_conditions.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# {name}: EER and minDCF per codec or channel condition", ""]
    lines += ["| condition | EER (%) | minDCF | scored | failed |", "|---|---|---|---|---|"]
    lines += [f"| {r['condition']} | {100 * r['eer']:.2f} | {r['min_dcf']:.4f} | {r['n_scored']} "
              f"| {r['n_failed']} |" for r in rows]  # fmt: skip
    (folder / f"{name}_conditions.md").write_text("\n".join(lines) + "\n")


def report_options(corpus, options):
    """The ``report`` settings of the test set from ``--report`` and ``--report_option``."""
    if corpus is None:
        if options:
            raise SystemExit("--report_option needs --report")
        return {}
    report = {"corpus": corpus}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise SystemExit(f"--report_option {option!r} must be KEY=VALUE")
        report[key] = value
    return report


def load_evaluated_checkpoints(hparams):
    """Loads the run's test checkpoint(s) into its modules; returns their names.

    The rule of the recipe's test evaluation
    (:func:`~speechbrain_nes2net.training.checkpoints.evaluation_checkpoints`):
    the lowest ``selection_metric``, or the parameter average of the best
    ``average_checkpoints``; the newest, with a warning, when no epoch was validated.
    """
    checkpointer = hparams["checkpointer"]
    count = int(hparams["average_checkpoints"] or 1)
    try:
        checkpoints = evaluation_checkpoints(checkpointer, hparams["selection_metric"], count)
        if not checkpoints:
            raise SystemExit(f"evaluate.py: no checkpoint in {checkpointer.checkpoints_dir}; train first")
        load_checkpoint_average(hparams["modules"], checkpoints, MODEL_MODULES)
    except CheckpointSelectionError as err:
        raise SystemExit(f"evaluate.py: {err}") from None
    names = [ckpt.path.name for ckpt in checkpoints]
    logger.info("Evaluating %s%s", "the average of " if len(names) > 1 else "", ", ".join(names))
    return names


def evaluation_precision(args, run_opts):
    """``--precision``, else SpeechBrain's ``--eval_precision``, else fp32; 'auto' resolved."""
    device = getattr(run_opts, "device", None) or "cpu"
    precision = args.precision
    if precision is None and "eval_precision" in run_opts.overridden_args:
        precision = run_opts.eval_precision
    try:
        return resolve_precision(precision, device)
    except ValueError as err:
        raise SystemExit(f"evaluate.py: {err}") from None


def run_model(hparams, eval_samples, precision, decision, device):
    """The run's modules as an :class:`AntiSpoofModel` scoring files at ``precision``."""
    modules = hparams["modules"]
    if hasattr(modules["backend"], "forward_with_frames"):
        logger.warning(
            "evaluate.py scores utterances; the frame scores of this localisation model "
            "(segment and range EER) come from train.py's test sets or nes2net-score --frames"
        )
    settings = EvalSettings(
        sample_rate=hparams["sample_rate"],
        eval_samples=eval_samples,
        eval_min_samples=hparams["eval_min_samples"],
        eval_window_seconds=hparams["eval_window_seconds"],
    )
    try:
        return AntiSpoofModel.from_modules(
            modules["ssl"], modules["aggregator"], modules["backend"], settings, decision,
            run_opts={"device": device, "precision": precision},
        )  # fmt: skip
    except ValueError as err:  # e.g. bf16 for a front-end that cannot run it
        raise SystemExit(f"evaluate.py: {err}") from None


def write_outputs(hparams, args, name, scoring, frame, decision, checkpoints, precision, condition):
    """Writes the score file, metrics (with the protocol) and report from the merged logs; returns the summary.

    Called by every process: SpeechBrain's train logger writes on the main
    process and broadcasts to the others (a collective under torchrun); the
    files are the main process's.
    """
    records, failures = [], []
    labels = frame["label"]
    for position, utt_id, status, fields in scoring.merged():
        if status == FAILED:  # fields: reason, path; failed.csv names the file
            failures.append((utt_id, f"{fields[1]}: {fields[0]}"))
        else:
            records.append((utt_id, float(fields[0]), LABEL_IDS[labels.iloc[position]], ""))
    summary = score_summary(records, decision)
    summary["n_failed"] = len(failures)
    hparams["train_logger"].log_stats(
        stats_meta={"test set": name, "checkpoints": ", ".join(checkpoints)},
        test_stats={"EER": 100 * summary["eer"], "minDCF": summary["min_dcf"]},
    )
    if not sb.utils.distributed.if_main_process():
        return summary
    protocol = scoring_protocol(
        eval_samples=args.eval_samples, window_seconds=hparams["eval_window_seconds"],
        checkpoints=checkpoints, precision=precision, manifest=args.test_manifest,
        n_rows=len(frame), n_scored=len(records), n_failed=len(failures),
        min_samples=hparams["eval_min_samples"], sample_rate=hparams["sample_rate"],
        condition=condition,
    )  # fmt: skip
    folder = Path(hparams["output_folder"]) / "scores"
    scores_path, _ = write_test_outputs(folder, name, records, summary, failures, protocol)
    report = report_options(args.report, args.report_option)
    if report:
        test_set = TestSet(name, None, args.test_manifest, report, args.eval_samples)
        write_corpus_report(folder, name, scores_path, test_set, bool(failures), None, protocol)
        if plots_extra_note():
            print(plots_extra_note())
    return summary


def main(argv):
    """Scores the manifest with the run's selected checkpoint and writes the outputs."""
    args, rest = parse(argv)
    report_options(args.report, args.report_option)  # a usage error stops before any work
    conditions = evaluated_conditions(args)
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    check_run_options(run_opts)
    precision = evaluation_precision(args, run_opts)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    log_file = os.path.join(hparams["output_folder"], "log.txt")  # appends to the run's log
    sb.utils.logger.setup_logging(
        sb.core.DEFAULT_LOG_CONFIG, {"handlers": {"file_handler": {"filename": log_file}}}
    )
    checkpoints = load_evaluated_checkpoints(hparams)
    # The run's decision rule (fitted on its dev scores): rates at its threshold.
    decision, _ = read_decision(hparams["output_folder"])
    device = getattr(run_opts, "device", None) or "cpu"
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # torchrun: one GPU per process, as in train.py
    model = run_model(hparams, args.eval_samples, precision, decision, device)
    if args.compile:
        seconds = model.compile_frontend(hparams["eval_dataloader_options"]["batch_size"])
        print(f"evaluate.py: compiled the SSL model in {seconds:.0f} s")
    frame = read_manifest(args.test_manifest)
    folder = Path(hparams["output_folder"]) / "scores"
    options = {
        "eval_samples": args.eval_samples,
        "eval_min_samples": hparams["eval_min_samples"],
        "eval_window_seconds": hparams["eval_window_seconds"],
        "sample_rate": hparams["sample_rate"],
        "precision": model.precision,
    }
    model_id = "parameters:" + parameter_fingerprint(
        {name: hparams["modules"][name] for name in MODEL_MODULES}
    )
    scorings = {}  # output name -> (condition, its scoring), each condition in turn
    for condition in conditions:
        name = args.test_name if condition is None else f"{args.test_name}_{condition}"
        model.condition = condition
        coded = dict(options, condition=condition) if condition else options
        header = {"tool": "recipes/evaluate.py", "model": model_id, "options": coded}
        scorings[name] = condition, score_shard(hparams, args, model, frame, folder, name, header)
    summaries = {}
    for name, (condition, scoring) in scorings.items():
        waiting = scoring.incomplete_shards()
        if waiting:  # --shard without torchrun: the last shard to finish writes the outputs
            print(f"{name}: shard {scoring.rank} of {scoring.world_size} done; waiting for "
                  f"shards {waiting} (run them with --shard=R/{scoring.world_size})")  # fmt: skip
            return
        summaries[condition] = write_outputs(
            hparams, args, name, scoring, frame, decision, checkpoints, model.precision, condition
        )
    if len(summaries) > 1 and sb.utils.distributed.if_main_process():
        write_condition_table(folder, args.test_name, summaries)
    finish_distributed()


def score_shard(hparams, args, model, frame, folder, name, header):
    """Scores this shard of the manifest into the resumable log of ``name``; returns its CorpusScoring.

    Under torchrun every process waits here until all shards are scored.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        scoring = CorpusScoring(
            lambda: zip(frame["ID"], frame["wav"]),
            lambda r, n: folder / f"{name}_scores.shard-{r}-of-{n}.log",
            header, resolve_shard(args.shard), restart=args.restart, chunk_size=args.chunk_size,
        )  # fmt: skip
        if distributed:
            torch.distributed.barrier()  # every shard's log opened (or restarted) first
        batch_size = hparams["eval_dataloader_options"]["batch_size"]
        scoring.score(model, batch_size, calibrated=False, retry_failed=args.retry_failed)
    except (ValueError, ScoreLogError) as err:  # InputError is a ValueError
        raise SystemExit(f"evaluate.py: {err}") from None
    if distributed:
        scoring.wait_for_shards()
        torch.distributed.barrier()
    return scoring


if __name__ == "__main__":
    main(sys.argv[1:])
