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
scores under bfloat16 autocast, about 2.5x faster on CPUs with AVX-512 BF16;
scores move slightly (tolerance in ``docs/DEPLOYING.md``).

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import dataclasses
import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.evaluation.files import read_decision
from speechbrain_nes2net.evaluation.report_writer import plots_extra_note
from speechbrain_nes2net.precision import PRECISIONS, resolve_precision
from speechbrain_nes2net.training.brain import AntiSpoofBrain
from speechbrain_nes2net.training.config import (
    check_run_options,
)
from speechbrain_nes2net.training.dataio import audio_pipeline, manifest_dataset
from speechbrain_nes2net.training.recipe import (
    TestSet,
    finish_distributed,
)


def parse(argv):
    """Splits the command line into this script's options and SpeechBrain's."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], add_help=True, allow_abbrev=False
    )
    parser.add_argument("--test_manifest", required=True, help="manifest CSV to score")
    parser.add_argument("--test_name", required=True, help="name of the output files")
    parser.add_argument(
        "--eval_samples", type=int, default=None,
        help="score the first N samples (repeat-padded), e.g. 64600; full utterances if unset",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="fp32 (default), bf16 (matrix products in bfloat16), or auto (bf16 where the "
        "CPU/GPU computes it natively); SpeechBrain's --eval_precision, checked",
    )  # fmt: skip
    parser.add_argument("--report", default=None, help="corpus rules of the report (e.g. ctrsvdd)")
    parser.add_argument(
        "--report_option", action="append", default=[], metavar="KEY=VALUE",
        help="a report option, repeatable (e.g. keys_dir=/data/ASVspoof2021/keys)",
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


def main(argv):
    """Scores the manifest with the run's selected checkpoint and writes the outputs."""
    args, rest = parse(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    check_run_options(run_opts)
    # SpeechBrain's eval_precision (RunOptions is a frozen dataclass), 'auto' resolved.
    precision = resolve_precision(args.precision, getattr(run_opts, "device", None) or "cpu")
    run_opts = dataclasses.replace(
        run_opts,
        eval_precision=precision,
        overridden_args=set(run_opts.overridden_args) | {"eval_precision"},
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    log_file = os.path.join(hparams["output_folder"], "log.txt")  # appends to the run's log
    sb.utils.logger.setup_logging(
        sb.core.DEFAULT_LOG_CONFIG, {"handlers": {"file_handler": {"filename": log_file}}}
    )

    dataset = manifest_dataset(
        args.test_manifest,
        audio_pipeline(
            num_samples=args.eval_samples,
            min_samples=hparams.get("eval_min_samples", 0),
        ),
        sort_by_duration=args.eval_samples is None,
    )
    brain = AntiSpoofBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    # The run's decision rule (fitted on its dev scores): rates at its threshold.
    brain.decision, _ = read_decision(hparams["output_folder"])
    brain.test_set = TestSet(
        args.test_name, dataset, args.test_manifest, report_options(args.report, args.report_option)
    )
    brain.evaluate(
        dataset,
        min_key=brain.selection_metric,
        test_loader_kwargs=dict(hparams["eval_dataloader_options"]),
    )
    main_process = sb.utils.distributed.if_main_process()
    finish_distributed()
    if main_process and brain.test_set.report and plots_extra_note():
        print(plots_extra_note())


if __name__ == "__main__":
    main(sys.argv[1:])
