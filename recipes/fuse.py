#!/usr/bin/env python3
"""Fuses the score files of several systems by logistic regression trained on dev.

Usage::

    python recipes/fuse.py \\
        --dev runA/scores/demo_dev_scores.txt runB/scores/demo_dev_scores.txt \\
        --dev_manifest runA/save/manifests/dev.csv \\
        --eval runA/scores/demo_test_scores.txt runB/scores/demo_test_scores.txt \\
        --eval_manifest runA/save/manifests/test.csv --report eer \\
        --output_folder fused/ --names wavlm hubert

Each system gives a dev and an eval score file (``ID score`` lines, as the
recipes write them), in the same order. The fusion weights are fitted on dev
(``speechbrain_nes2net.evaluation.fusion``) and the fused eval scores
(calibrated LLRs) written to ``<output_folder>/fused_eval_scores.txt``, with
``fusion.json`` (weights, and each system calibrated alone, their
equal-weight average and the fusion compared on dev and eval) and, with
``--report``, the metrics and corpus report of the fused scores. A trial that a
system did not score is an error listing the IDs, unless ``--allow_missing``
fills it with that system's mean dev score (counted in ``fusion.json``).

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import sys
from pathlib import Path

from speechbrain_nes2net.evaluation.files import (
    read_scores,
    score_summary,
    write_test_outputs,
)
from speechbrain_nes2net.evaluation.fusion import fuse_score_files
from speechbrain_nes2net.evaluation.report_writer import write_report
from speechbrain_nes2net.evaluation.reports import build_report
from speechbrain_nes2net.manifest import read_manifest


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", nargs="+", required=True, help="each system's dev score file")
    parser.add_argument("--dev_manifest", required=True, help="the dev manifest (labels)")
    parser.add_argument("--eval", nargs="+", required=True, help="each system's eval score file")
    parser.add_argument("--eval_manifest", help="the eval manifest, for metrics and the report")
    parser.add_argument("--output_folder", required=True)
    parser.add_argument("--names", nargs="+", help="system names (default system1, system2, ...)")
    parser.add_argument("--report", help="corpus rules of the eval report (e.g. eer, in_the_wild)")
    parser.add_argument("--prior", type=float, default=0.5, help="bona fide prior of the fit")
    parser.add_argument(
        "--allow_missing", action="store_true",
        help="fill trials a system lacks with its mean dev score instead of stopping",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Fits, applies and reports the fusion; prints the comparison table."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.names and len(args.names) != len(args.dev):
        raise SystemExit(f"--names gives {len(args.names)} names for {len(args.dev)} systems")
    if args.report and not args.eval_manifest:
        raise SystemExit("--report needs --eval_manifest")
    try:
        result = fuse_score_files(
            args.dev, args.dev_manifest, args.eval, args.output_folder, systems=args.names,
            eval_manifest=args.eval_manifest, allow_missing=args.allow_missing, prior=args.prior,
        )  # fmt: skip
    except ValueError as error:  # duplicate names, missing trials: the message says what to do
        raise SystemExit(f"fuse.py: {error}") from None
    out = Path(args.output_folder)
    if args.eval_manifest:
        fused = out / "fused_eval_scores.txt"
        labels = read_manifest(args.eval_manifest).set_index("ID")["label"]
        records = [
            (utt_id, float(score), int(labels[utt_id] == "bonafide"))
            for utt_id, score in read_scores(fused).items()
            if utt_id in labels.index
        ]
        # The fused scores inherit each system's crop, checkpoints and precision
        # (in that system's own metrics JSON); the fusion states what it combined.
        protocol = {
            "fusion": {"systems": result["systems"], "dev": args.dev, "eval": args.eval},
            "subset": {"manifest": args.eval_manifest, "rows": int(len(labels)),
                       "scored": len(records), "failed": 0},
        }  # fmt: skip
        write_test_outputs(out, "fused_eval", records, score_summary(records), protocol=protocol)
        if args.report:
            report = build_report(args.report, out / "fused_eval_scores.txt", args.eval_manifest)
            report["protocol"] = protocol
            write_report(report, out, "fused_eval")
    weights = ", ".join(f"{s} {w:.4g}" for s, w in zip(result["systems"], result["weights"]))
    print(f"Fusion weights: {weights}; offset {result['offset']:.4g} -> {out / 'fusion.json'}")
    for split in ("dev", "eval"):
        for name, row in result.get(split, {}).items():
            print(f"{split} {name}: EER {100 * row['eer']:.2f}%, minDCF {row['min_dcf']:.4f}, "
                  f"Cllr {row['cllr']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
