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
``--precision bf16`` (or ``auto``: bf16 where the CPU/GPU computes it natively)
scores under bfloat16 autocast; scores move slightly, and the speed gained
depends on the model and the batch (measured in ``docs/DEPLOYING.md``).

Large corpora: scores are appended to
``scores/<test_name>_scores.shard-R-of-N.log`` as batches finish, and a rerun
of the same command scores only what is missing (``--restart`` starts over,
``--retry_failed`` retries unusable files); a changed checkpoint, option or
manifest is refused. ``torchrun --nproc_per_node=N recipes/evaluate.py ...``
(gloo on CPU, NCCL on GPU; ``--nnodes`` for several machines, with the output
folder on a shared file system) gives each process a shard, and the main
process merges them; ``--shard=R/N`` runs one shard without torchrun (the
process that completes the last shard writes the outputs). See
:mod:`speechbrain_nes2net.training.resumable_eval`.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import dataclasses
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

from speechbrain_nes2net.evaluation.files import read_decision
from speechbrain_nes2net.evaluation.report_writer import plots_extra_note
from speechbrain_nes2net.evaluation.score_log import DEFAULT_CHUNK_SIZE, ScoreLogError
from speechbrain_nes2net.precision import PRECISIONS, resolve_precision
from speechbrain_nes2net.training.brain import AntiSpoofBrain, unwrap_ddp
from speechbrain_nes2net.training.config import (
    check_run_options,
)
from speechbrain_nes2net.training.recipe import (
    TestSet,
    finish_distributed,
)
from speechbrain_nes2net.training.resumable_eval import ShardedEvaluation

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
        help="fp32, bf16 (matrix products in bfloat16), or auto (bf16 where the CPU/GPU "
        "computes it natively); sets SpeechBrain's --eval_precision (default: the run "
        "option's, fp32)",
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


def shard_of(option):
    """``(rank, world_size)``: torchrun's, else ``--shard R/N``, else ``(0, 1)``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        if option:
            raise SystemExit("--shard is for runs without torchrun (torchrun gives the shards)")
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if not option:
        return 0, 1
    rank, sep, world = option.partition("/")
    if not (sep and rank.isdigit() and world.isdigit() and int(rank) < int(world)):
        raise SystemExit(f"--shard {option!r} must be R/N with 0 <= R < N, e.g. 0/4")
    return int(rank), int(world)


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


def main(argv):
    """Scores the manifest with the run's selected checkpoint and writes the outputs."""
    args, rest = parse(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    check_run_options(run_opts)
    if args.precision is not None:
        # SpeechBrain's eval_precision (RunOptions is a frozen dataclass), 'auto'
        # resolved; without --precision, --eval_precision (or fp32) holds.
        device = getattr(run_opts, "device", None) or "cpu"
        run_opts = dataclasses.replace(
            run_opts,
            eval_precision=resolve_precision(args.precision, device),
            overridden_args=set(run_opts.overridden_args) | {"eval_precision"},
        )
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    log_file = os.path.join(hparams["output_folder"], "log.txt")  # appends to the run's log
    sb.utils.logger.setup_logging(
        sb.core.DEFAULT_LOG_CONFIG, {"handlers": {"file_handler": {"filename": log_file}}}
    )

    brain = AntiSpoofBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    # The run's decision rule (fitted on its dev scores): rates at its threshold.
    brain.test_decision, _ = read_decision(hparams["output_folder"])
    brain.scored_as = TestSet(
        args.test_name, None, args.test_manifest,
        report_options(args.report, args.report_option), args.eval_samples,
    )  # fmt: skip
    brain.on_evaluate_start(min_key=brain.selection_metric)
    if hasattr(unwrap_ddp(brain.modules["backend"]), "forward_with_frames"):
        logger.warning(
            "evaluate.py scores utterances; the frame scores of this localisation model "
            "(segment and range EER) come from train.py's test sets or nes2net-score --frames"
        )
    rank, world_size = shard_of(args.shard)
    try:
        evaluation = ShardedEvaluation(
            brain, args.test_manifest, args.test_name, args.eval_samples,
            hparams["eval_dataloader_options"], (rank, world_size),
            restart=args.restart, chunk_size=args.chunk_size,
        )  # fmt: skip
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every shard's log opened (or restarted) first
        brain.on_stage_start(sb.Stage.TEST)
        evaluation.score_shard(retry_failed=args.retry_failed)
    except ScoreLogError as err:
        raise SystemExit(f"evaluate.py: {err}") from None
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        evaluation.wait_for_shards()
        torch.distributed.barrier()
    waiting = evaluation.incomplete_shards()
    if waiting:  # --shard without torchrun: the last shard to finish writes the outputs
        print(f"{args.test_name}: shard {rank} of {world_size} done; waiting for shards "
              f"{waiting} (run them with --shard=R/{world_size})")  # fmt: skip
        return
    records, failures, loss = [], [], 0.0
    if sb.utils.distributed.if_main_process():
        records, failures, loss = evaluation.merged()
    brain.score_records, brain.failures = records, failures
    brain.on_stage_end(sb.Stage.TEST, loss)
    main_process = sb.utils.distributed.if_main_process()
    finish_distributed()
    if main_process and brain.scored_as.report and plots_extra_note():
        print(plots_extra_note())


if __name__ == "__main__":
    main(sys.argv[1:])
