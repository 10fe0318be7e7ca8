#!/usr/bin/env python3
"""Scores a trained run on any prepared manifest; writes scores, metrics and a report.

Usage::

    # In-the-Wild with a model trained on ASVspoof 2019 LA (full utterances)
    python recipes/evaluate.py results/nes2net_x_asvspoof2019/12345/hyperparams.yaml \\
        --test_manifest=manifests/in_the_wild_eval.csv --test_name=in_the_wild \\
        --report=in_the_wild

    # ASVspoof 2021 DF, first 4 s, average of the best 5 checkpoints
    python recipes/evaluate.py results/nes2net_x_asvspoof2019/12345/hyperparams.yaml \\
        --test_manifest=manifests/asvspoof2021_df_eval.csv --test_name=df_eval \\
        --eval_samples=64600 --report=asvspoof2021_df --average_checkpoints=5

The first argument is the ``hyperparams.yaml`` a training run saved in its
output folder (or the recipe YAML with the same overrides). The checkpoint
chosen by the run's ``selection_metric`` (or the average of the best
``--average_checkpoints``) scores the manifest; ``<output_folder>/scores/``
receives ``<test_name>_scores.txt``, ``<test_name>_metrics.json`` and, with
``--report``, the corpus report (``--report_option key=value`` passes report
options such as ``keys_dir=/data/ASVspoof2021/keys``). Other ``--key=value``
arguments override the YAML, as in ``train.py`` (e.g. ``--device=cuda:0``).
``--precision bf16`` (or ``auto``: bf16 where the CPU/GPU computes it natively;
SpeechBrain's ``--eval_precision`` says the same) runs the SSL front-end under
bfloat16 autocast, as ``nes2net-score --precision`` does; scores move
slightly, and the speed gained depends on the model and the batch (measured
in ``docs/DEPLOYING.md``). ``--compile`` compiles the SSL model with
``torch.compile`` before scoring (a minute or two for a Large model: for
long jobs).

The run's modules, with the chosen checkpoint, score the manifest as their
export would (:meth:`AntiSpoofModel.from_modules
<speechbrain_nes2net.pretrained.interface.AntiSpoofModel.from_modules>`:
the same reading, crop, windows and precision as ``nes2net-score``), with
the corpus scoring engine of ``nes2net-score --output``
(:mod:`speechbrain_nes2net.pretrained.corpus_scoring`). Unusable files are
listed in ``<test_name>_failed.csv`` and left out of the metrics.

Large corpora: scores are appended to
``scores/<test_name>_scores.shard-R-of-N.log`` as batches finish, and a rerun
of the same command scores only what is missing (``--restart`` starts over,
``--retry_failed`` retries unusable files); a changed checkpoint, option or
manifest is refused. ``torchrun --nproc_per_node=N recipes/evaluate.py ...``
(gloo on CPU, NCCL on GPU; ``--nnodes`` for several machines, with the output
folder on a shared file system) gives each process a shard, and the main
process merges them; ``--shard=R/N`` runs one shard without torchrun (the
process that completes the last shard writes the outputs).

Authors
 * speechbrain-nes2net contributors
"""

import argparse
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
        help="torch.compile the SSL model first (a minute or two for a Large model; pays "
        "on long jobs, see docs/DEPLOYING.md)",
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
    return parser.parse_known_args(argv)


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
    if len(names) > 1:
        logger.info("Evaluating the average of %s", ", ".join(names))
    else:
        logger.info("Evaluating %s", names[0])
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


def write_outputs(hparams, args, scoring, frame, decision, checkpoints, precision):
    """Writes the score file, metrics (with the protocol) and report from the merged logs.

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
        stats_meta={"test set": args.test_name, "checkpoints": ", ".join(checkpoints)},
        test_stats={"EER": 100 * summary["eer"], "minDCF": summary["min_dcf"]},
    )
    if not sb.utils.distributed.if_main_process():
        return
    protocol = scoring_protocol(
        eval_samples=args.eval_samples,
        window_seconds=hparams["eval_window_seconds"],
        checkpoints=checkpoints,
        precision=precision,
        manifest=args.test_manifest,
        n_rows=len(frame),
        n_scored=len(records),
        n_failed=len(failures),
        min_samples=hparams["eval_min_samples"],
        sample_rate=hparams["sample_rate"],
    )
    folder = Path(hparams["output_folder"]) / "scores"
    scores_path, _ = write_test_outputs(
        folder, args.test_name, records, summary, failures, protocol
    )
    report = report_options(args.report, args.report_option)
    if report:
        test_set = TestSet(args.test_name, None, args.test_manifest, report, args.eval_samples)
        write_corpus_report(
            folder, args.test_name, scores_path, test_set, bool(failures), None, protocol
        )
        if plots_extra_note():
            print(plots_extra_note())


def main(argv):
    """Scores the manifest with the run's selected checkpoint and writes the outputs."""
    args, rest = parse(argv)
    report_options(args.report, args.report_option)  # a usage error stops before any work
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
    batch_size = hparams["eval_dataloader_options"].get("batch_size", 1)
    if args.compile:
        print(f"evaluate.py: compiled the SSL model in {model.compile_frontend(batch_size):.0f} s")
    frame = read_manifest(args.test_manifest)
    folder = Path(hparams["output_folder"]) / "scores"
    header = {
        "tool": "recipes/evaluate.py",
        "model": "parameters:" + parameter_fingerprint(
            {name: hparams["modules"][name] for name in MODEL_MODULES}
        ),
        "options": {
            "eval_samples": args.eval_samples,
            "eval_min_samples": hparams["eval_min_samples"],
            "eval_window_seconds": hparams["eval_window_seconds"],
            "sample_rate": hparams["sample_rate"],
            "precision": model.precision,
        },
    }
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        rank, world_size = resolve_shard(args.shard)
        scoring = CorpusScoring(
            lambda: zip(frame["ID"], frame["wav"]),
            lambda r, n: folder / f"{args.test_name}_scores.shard-{r}-of-{n}.log",
            header, (rank, world_size), restart=args.restart, chunk_size=args.chunk_size,
        )  # fmt: skip
        if distributed:
            torch.distributed.barrier()  # every shard's log opened (or restarted) first
        scoring.score(model, batch_size, calibrated=False, retry_failed=args.retry_failed)
    except (ValueError, ScoreLogError) as err:  # InputError is a ValueError
        raise SystemExit(f"evaluate.py: {err}") from None
    if distributed:
        scoring.wait_for_shards()
        torch.distributed.barrier()
    waiting = scoring.incomplete_shards()
    if waiting:  # --shard without torchrun: the last shard to finish writes the outputs
        print(f"{args.test_name}: shard {rank} of {world_size} done; waiting for shards "
              f"{waiting} (run them with --shard=R/{world_size})")  # fmt: skip
        return
    write_outputs(hparams, args, scoring, frame, decision, checkpoints, model.precision)
    finish_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
