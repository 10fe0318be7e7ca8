#!/usr/bin/env python3
"""Exports a model as a self-contained SpeechBrain folder (loadable with ``EncoderClassifier``).

From a training run of ``recipes/train.py`` (best checkpoint by the run's
selection metric, the last one, or an average)::

    python recipes/export.py run results/nes2net_x_ctrsvdd/420 exports/nes2net_x_ctrsvdd
    python recipes/export.py run RUN EXPORT --average 3 --calibration dev_calibration.json

From a released official checkpoint (the back-end options mirror the official
scripts' flags; pass the values the checkpoint was trained with)::

    python recipes/export.py official WavLM_Nes2Net_X_e75.pt exports/official_x \\
        --backend WavLM_Nes2Net_X --dilation 1 --se-ratio 1
    python recipes/export.py official wav2vec2_Nes2Net_X.pth exports/official_asv \\
        --backend wav2vec2_Nes2Net_X --dilation 2 --eval-samples 64600

Then score files with ``nes2net-score --model EXPORT PATH...``. See docs/PRETRAINED.md.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import json
import logging
import sys
from pathlib import Path

# The recipe YAMLs name their corpus scripts as ``!name:data_prep.<corpus>_prepare...``
# and data_prep/ is not installed (only the library is): as SpeechBrain's recipes do
# with their prepare scripts, put the repository root on sys.path, so that a run's
# hyperparams.yaml loads (export_run) from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechbrain_nes2net.official.convert import convert_official_checkpoint
from speechbrain_nes2net.pretrained.export import ExportOptions, export_run

# Defaults of the official inference scripts (easy_inference_demo.py) of each release.
RELEASE_DEFAULTS = {
    "WavLM": {"Nes_ratio": [8, 8], "dilation": 1, "pool_func": "mean", "SE_ratio": [1]},
    "wav2vec2": {"Nes_ratio": [8, 8], "dilation": 2, "pool_func": "mean", "SE_ratio": [1],
                 "n_output_logits": 2},
}  # fmt: skip


def _eval_samples(value):
    return None if value.lower() in ("full", "none") else int(value)


def _run_eval_samples(value):
    # ExportOptions spells full utterances 'full': None there means "as the run's test sets".
    return "full" if _eval_samples(value) is None else int(value)


def _json_arg(value):
    path = Path(value)
    return json.loads(path.read_text()) if path.is_file() else json.loads(value)


def parse_args(argv):
    """Parses the command line (subcommands ``run`` and ``official``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # fmt: off
    run = commands.add_parser("run", help="export a training run of recipes/train.py")
    run.add_argument("--decision-prior", dest="decision_prior", type=float, default=None,
        help="bona fide prior of the decision with --calibration (default: the run's, else 0.5)")
    run.add_argument("run_folder", help="the run's output_folder (holds hyperparams.yaml)")
    run.add_argument("export_folder")
    run.add_argument("--checkpoint", default="best",
                     help="'best' (default), 'last' or a CKPT+... folder name")
    run.add_argument("--average", type=int,
        help="average the parameters of the N best (or last) checkpoints (default: the run's "
        "average_checkpoints)")
    run.add_argument("--metric", help="selection metric (default: the run's selection_metric)")
    run.add_argument("--test-set", help="export the evaluation settings of this test set")
    run.add_argument("--eval-samples", type=_run_eval_samples,
        help="score the first N samples, or 'full' utterances (default: as the run's test sets)")
    run.add_argument("--ssl-hub-id", help="hub id of a frozen SSL model loaded from a local folder")

    official = commands.add_parser("official", help="convert an official Nes2Net checkpoint")
    official.add_argument("checkpoint", help="the official .pt / .pth file")
    official.add_argument("export_folder")
    official.add_argument("--backend", required=True, help="official model name", choices=[
        "WavLM_Nes2Net", "WavLM_Nes2Net_X", "WavLM_Nes2Net_X_SeLU", "wav2vec2_Nes2Net_X"])
    official.add_argument("--Nes_ratio", "--nes-ratio", dest="Nes_ratio", type=int, nargs=2)
    official.add_argument("--dilation", type=int)
    official.add_argument("--pool_func", "--pool-func", dest="pool_func", choices=["mean", "ASTP"])
    official.add_argument("--SE_ratio", "--se-ratio", dest="SE_ratio", type=int)
    official.add_argument("--n_output_logits", "--n-output-logits", dest="n_output_logits",
                          type=int)
    official.add_argument("--aggregator", default="auto",
        help="WavLM_SEA, WavLM_WeightedSum, WavLM_AttM, 'last' or 'auto' "
        "(from the checkpoint's keys; default)")
    official.add_argument("--ssl-config", type=_json_arg,
        help="official SSL configuration (JSON file or string); default: "
        "the released WavLM-Large / XLS-R 300M")
    official.add_argument("--eval-samples", type=_eval_samples, default=None,
        help="score the first N samples (e.g. 64600), or 'full' (default)")
    official.add_argument("--eval-min-samples", type=int, default=0,
        help="repeat-pad shorter utterances to N samples (default 0)")
    for sub in (run, official):
        sub.add_argument("--calibration",
            help="calibration JSON (ScoreCalibration.to_dict()) fitted on development scores; "
            "a run's own (decision.json) is used by default")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing export")
        sub.add_argument("--no-verify", action="store_true",
                         help="skip reloading the export to check its scores")
    # fmt: on
    return parser.parse_args(argv)


def main(argv=None):
    """Exports a run or converts an official checkpoint, then prints the folder."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    common = {"overwrite": args.overwrite, "verify": not args.no_verify}
    if args.command == "run":
        options = ExportOptions(
            test_set=args.test_set, eval_samples=args.eval_samples, calibration=args.calibration,
            decision_prior=args.decision_prior, ssl_hub_id=args.ssl_hub_id,
        )  # fmt: skip
        folder = export_run(
            args.run_folder, args.export_folder, checkpoint=args.checkpoint,
            average=args.average, metric=args.metric, options=options, **common,
        )  # fmt: skip
    else:
        config = dict(RELEASE_DEFAULTS[args.backend.split("_", 1)[0]])
        for key in ("Nes_ratio", "dilation", "pool_func", "n_output_logits"):
            if getattr(args, key) is not None:
                config[key] = getattr(args, key)
        if args.SE_ratio is not None:
            config["SE_ratio"] = [args.SE_ratio]
        folder = convert_official_checkpoint(
            args.checkpoint, args.export_folder, args.backend, backend_config=config,
            ssl_config=args.ssl_config,
            aggregator_name=None if args.aggregator == "last" else args.aggregator,
            eval_samples=args.eval_samples, eval_min_samples=args.eval_min_samples,
            calibration=args.calibration, **common,
        )  # fmt: skip
    print(f"Exported to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
