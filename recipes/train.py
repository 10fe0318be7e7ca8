#!/usr/bin/env python3
"""Trains an SSL + Nes2Net anti-spoofing model, then scores every test set.

Usage::

    python recipes/train.py hparams/nes2net_x_ctrsvdd.yaml --data_folder=/data/CtrSVDD
    python recipes/train.py hparams/demo.yaml           # embedded demo, CPU, no download
    torchrun --standalone --nproc_per_node=2 recipes/train.py hparams/demo.yaml \\
        --distributed_backend=gloo

Every choice lives in the YAML; override any key on the command line
(``--lr_backend=1e-5``). Outputs, under ``output_folder``: the train log,
checkpoints (the best by the YAML's ``selection_metric`` among the validated
epochs, and the newest, to resume from), ``scores/<test set>_scores.txt``
(``ID score``, higher = more bona fide), ``scores/<test set>_metrics.json``,
the corpus reports, and, when the YAML sets ``export_folder``, the trained
model exported for ``EncoderClassifier.from_hparams``.

Authors
 * speechbrain-nes2net contributors
"""

import sys
from pathlib import Path

# The recipe YAMLs name their corpus scripts as ``!name:data_prep.<corpus>_prepare...``
# and data_prep/ is not installed (only the library is): as SpeechBrain's recipes do
# with their prepare scripts, put the repository root on sys.path, so that the YAMLs
# load from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.evaluation.report_writer import plots_extra_note
from speechbrain_nes2net.manifest import attacks_of
from speechbrain_nes2net.pretrained.export import export_run
from speechbrain_nes2net.training.brain import AntiSpoofBrain
from speechbrain_nes2net.training.config import (
    RecipeConfigError,
    check_recipe_config,
    check_run_options,
)
from speechbrain_nes2net.training.recipe import (
    augmented_valid_dataset,
    dev_sets,
    finish_distributed,
    fit_run_decision,
    prepare_corpora,
    run_summary,
    scored_test_sets,
    train_valid_datasets,
)
from speechbrain_nes2net.training.sampling import parse_data_spec


def main(argv, brain_class=AntiSpoofBrain, fit_dev_rules=None):
    """Prepares the data, trains, scores every test set, exports and prints the summary.

    Arguments
    ---------
    argv : list of str
        The command line: a recipe YAML, then SpeechBrain's run options and overrides.
    brain_class : type
        The Brain (``recipes/train_localization.py`` gives its frame-level one).
    fit_dev_rules : callable, optional
        ``(hparams, devs)``: fits further decision rules on the scored
        development sets, after the utterance rule (the segment rule of a
        localisation run).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    check_run_options(run_opts)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_recipe_config(hparams)
    localizer = hasattr(hparams["backend"], "forward_with_frames")
    if localizer != (brain_class is not AntiSpoofBrain):
        script = "recipes/train_localization.py" if localizer else "recipes/train.py"
        kind = "a localisation model (frame outputs)" if localizer else "an utterance-level model"
        raise RecipeConfigError(f"{hparams_file} trains {kind}: run it with {script}")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    manifests = prepare_corpora(hparams)
    train_set, valid_set = train_valid_datasets(hparams, manifests)
    augmented_valid_set = augmented_valid_dataset(hparams, manifests)  # valid_augmented: True
    tests = scored_test_sets(hparams, manifests)

    brain = brain_class(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        valid_set,
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["eval_dataloader_options"],
        augmented_valid_set=augmented_valid_set,
    )
    # The development set first: its scores fit the decision rule (calibrated
    # threshold) that the test metrics and the exported model use.
    devs = dev_sets(hparams, manifests, valid_set)
    decision = None
    for test_set in devs + tests:
        brain.evaluate(
            test_set.dataset,
            min_key=brain.selection_metric,
            test_loader_kwargs=dict(hparams["eval_dataloader_options"]),
            scored_as=test_set,
            decision=decision,
        )
        if test_set is devs[-1] and sb.utils.distributed.if_main_process():
            decision = fit_run_decision(hparams, devs)
            if fit_dev_rules is not None:
                fit_dev_rules(hparams, devs)

    main_process = sb.utils.distributed.if_main_process()
    finish_distributed()
    # After the process group is gone: the export reloads the YAML on its own.
    if main_process:
        if hparams["export_folder"]:
            if brain.debug and not brain.debug_persistently:
                # SpeechBrain keeps a debug run's checkpoints in a temporary folder.
                print("Debug run: no checkpoint was kept, so the model is not exported "
                      "(--debug_persistently keeps them)")
            else:
                export_run(hparams["output_folder"], hparams["export_folder"], overwrite=True)
                print(f"Exported the model to {hparams['export_folder']}")
        note = plots_extra_note()
        if note and any(test_set.report for test_set in tests):
            print(note)
        # The test EER lines come last: the run's summary.
        seen = set().union(*(  # the attacks of the corpora trained on
            attacks_of(manifests[reference])
            for reference in parse_data_spec(hparams["train_data"]) if reference in manifests
        ))  # fmt: skip
        for line in run_summary(hparams["output_folder"], tests, seen, debug=brain.debug):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
