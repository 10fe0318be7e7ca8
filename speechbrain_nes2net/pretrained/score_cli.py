"""``nes2net-score``: score audio files with an exported model folder.

Usage::

    nes2net-score --model path/to/export --output scores.txt audio_dir/ more.flac list.txt
    python -m speechbrain_nes2net.pretrained.score_cli --model path/to/export audio_dir/ > scores.txt

Each PATH is an audio file, a folder (searched recursively for audio files), a
list file (one audio path per line, or ``ID path``; relative paths are relative
to the list file) or a CSV manifest of the toolkit (``ID`` and ``wav``
columns): :mod:`speechbrain_nes2net.pretrained.inputs`. Files are scored in batches of similar duration, at any sample rate
and channel count (see :class:`speechbrain_nes2net.pretrained.interface.AntiSpoofModel`).

Output: one ``ID score`` line per file (higher = more bona fide; the calibrated
LLR when the model carries a calibration, unless ``--raw``), plus the label
with ``--labels`` (the model's decision) or ``--threshold T`` (``bonafide``
when score >= T); ``--format csv`` (or an output name ending in ``.csv``)
writes a CSV with ``ID,score[,label],path``. IDs are file names without
extension (for folders: the path inside the folder without extension).

With ``--frames`` (a localisation model, trained by
``hparams/nes2net_x_partialspoof_localization.yaml``), the output is instead
where each file is spoofed: a CSV ``ID,start,end,label,score``, one row per
time range (seconds; consecutive segments of ``--segment-shift`` seconds,
default the model's, with one decision merged; ``score`` the mean raw segment
score of the range, ``label`` bonafide / spoof at the model's segment
threshold or ``--threshold``), the ranges of a file covering it once (see
``AntiSpoofModel.localize`` and docs/LOCALIZATION.md).

Files that cannot be scored (missing, corrupt, empty) are reported on stderr
and in ``failed.csv`` next to the output (``ID,path,reason``; written
whenever ``--output`` is given); the others are still scored, and the exit
status is 1 when any file failed, 2 for usage errors.

Resuming: with ``--output`` the scores are logged to ``OUTPUT.scorelog`` as
batches finish (files read lazily, in chunks of ``--chunk-size``); a rerun
of the same command scores only what is missing, refuses a changed model,
score-changing option or input list, and writes the output in input order
(``--restart`` starts again, ``--retry-failed`` retries failed files; exit
status 3 when the log or the output cannot be written). ``--shard R/N``
scores every N-th file from the R-th into ``OUTPUT.shard-R-of-N.scorelog``
(shards can run on several machines sharing the output folder); the run that
completes the last shard writes the output. The engine is
:mod:`speechbrain_nes2net.pretrained.corpus_scoring`, as for
``recipes/evaluate.py``. See docs/SCALE.md.

Engines: ``--model`` names an exported model folder (torch; ``--precision
bf16`` or ``auto`` runs the SSL front-end in bfloat16, see
:mod:`speechbrain_nes2net.precision`) or an ``.onnx`` file written by
``nes2net-export-onnx`` (onnxruntime, no torch model; ``--engine`` forces
either). ``--compile`` compiles the torch model's SSL front-end first
(``torch.compile``; for long jobs, see docs/DEPLOYING.md). Files,
preprocessing, batches, windows and failures are handled by the same code on
both (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`).

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import csv
import io
import logging
import os
import sys
from pathlib import Path

from speechbrain_nes2net.audio import AudioError
from speechbrain_nes2net.evaluation.score_log import (
    DEFAULT_CHUNK_SIZE,
    FAILED,
    ScoreLogError,
    merged_records,
)
from speechbrain_nes2net.precision import PRECISIONS
from speechbrain_nes2net.pretrained.corpus_scoring import CorpusScoring, resolve_shard
from speechbrain_nes2net.pretrained.inputs import InputError, collect_inputs, iter_inputs
from speechbrain_nes2net.pretrained.model_identity import model_source_fingerprint
from speechbrain_nes2net.pretrained.scoring import DEFAULT_MAX_BATCH_SECONDS
from speechbrain_nes2net.scores import LABELS

#: Files per batch unless ``--batch-size`` says otherwise; the torch engine on a
#: CPU: :data:`CPU_BATCH_SIZE`.
DEFAULT_BATCH_SIZE = 8
#: Measured on WavLM-Large (docs/DEPLOYING.md): on a CPU a file costs least in
#: batches of 2, in fp32 and bf16; larger ones gain nothing more (bf16: lose).
CPU_BATCH_SIZE = 2
#: The values of ``--engine``.
ENGINES = ("auto", "torch", "onnxruntime")


def parse_args(argv=None):
    """Parses the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="nes2net-score",
        description="Score audio files with an exported speechbrain-nes2net model "
        "(higher = more bona fide).",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="audio files, folders, list files or CSV manifests"
    )
    parser.add_argument(
        "--model", required=True,
        help="exported model folder, model hub id, or .onnx file (nes2net-export-onnx)",
    )  # fmt: skip
    parser.add_argument(
        "--output",
        help="output file (default: stdout); resumable: rerun the same command after a crash",
    )
    parser.add_argument(
        "--format",
        choices=("txt", "csv"),
        help="output format (default: csv for a .csv output, else txt)",
    )
    parser.add_argument(
        "--batch-size", type=int,
        help=f"files per batch (default {DEFAULT_BATCH_SIZE}; {CPU_BATCH_SIZE} for the torch "
        "engine on a CPU, where larger batches of a large SSL model gain nothing)",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-seconds", type=float, default=DEFAULT_MAX_BATCH_SECONDS,
        help=f"most padded audio per batch (default {DEFAULT_MAX_BATCH_SECONDS:g} s)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help="torch (a model folder) or onnxruntime (an .onnx export); auto: by --model",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="torch engine: fp32 (default), bf16 (SSL front-end in bfloat16), or auto "
        "(bf16 where the CPU/GPU computes it natively)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the engine (default: torch's / onnxruntime's)"
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="torch engine: torch.compile the SSL model first (a minute or two for a "
        "Large model; pays on long jobs, see docs/DEPLOYING.md)",
    )  # fmt: skip
    parser.add_argument("--savedir", help="where SpeechBrain collects the model files")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument(
        "--labels", action="store_true",
        help="add the model's decision (bonafide/spoof, at the threshold shipped with the model)"
    )
    decision.add_argument(
        "--threshold", type=float, help="add a label: bonafide when score >= THRESHOLD"
    )
    parser.add_argument(
        "--raw", action="store_true", help="raw scores even when the model carries a calibration"
    )
    parser.add_argument(
        "--frames", action="store_true",
        help="localisation models: write where each file is spoofed, as CSV rows "
        "ID,start,end,label,score (time ranges in seconds)",
    )
    parser.add_argument(
        "--segment-shift", type=float,
        help="with --frames: decision resolution in seconds (default: the model's)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_resume_arguments(parser)
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.max_batch_seconds is not None and args.max_batch_seconds <= 0:
        parser.error("--max-batch-seconds must be positive")
    if args.engine == "auto":
        args.engine = "onnxruntime" if str(args.model).lower().endswith(".onnx") else "torch"
    if args.engine == "onnxruntime" and args.precision == "bf16":
        parser.error(
            "--precision bf16 is the torch engine's; an ONNX export runs at its own precision "
            "(fp32, or int8 when exported with nes2net-export-onnx --quantize int8)"
        )
    if args.engine == "onnxruntime" and args.compile:
        parser.error("--compile is the torch engine's")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    check_resume_arguments(parser, args)
    if args.frames and args.labels:
        parser.error("--frames writes labels already; --labels does not apply")
    if args.segment_shift is not None and not args.frames:
        parser.error("--segment-shift applies with --frames only")
    if args.frames and (args.restart or args.retry_failed or args.shard):
        parser.error(
            "--restart, --retry-failed and --shard apply to score logs; --frames writes its "
            "ranges at the end"
        )
    if args.frames and args.engine == "onnxruntime":
        parser.error("--frames needs the torch model folder (the ONNX graph gives utterance scores)")
    return args


def _label(result, threshold):
    if threshold is not None:
        return LABELS[int(result.score >= threshold)]
    return result.label


def write_scores(handle, entries, results, fmt, with_label, threshold):
    """Writes the scored files (failed ones left out) as text lines or CSV."""
    rows = [(utt_id, path, result) for (utt_id, path), result in zip(entries, results) if result.ok]
    if fmt == "csv":
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "score"] + (["label"] if with_label else []) + ["path"])
        for utt_id, path, result in rows:
            label = [_label(result, threshold)] if with_label else []
            writer.writerow([utt_id, f"{result.score:.6f}"] + label + [str(path)])
        return
    for utt_id, _, result in rows:
        label = f" {_label(result, threshold)}" if with_label else ""
        handle.write(f"{utt_id} {result.score:.6f}{label}\n")


def load_model(args):
    """The scoring model the arguments name: AntiSpoofModel (torch) or OnnxAntiSpoofModel.

    Sets ``args.batch_size`` when ``--batch-size`` was not given:
    :data:`CPU_BATCH_SIZE` for the torch engine on a CPU, else
    :data:`DEFAULT_BATCH_SIZE`. With ``--compile``, compiles the SSL model.
    """
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.engine == "onnxruntime":
        from speechbrain_nes2net.pretrained.onnx_model import OnnxAntiSpoofModel

        if not Path(args.model).is_file():
            raise FileNotFoundError(f"{args.model}: no such ONNX file")
        args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
        return OnnxAntiSpoofModel(args.model, threads=args.threads)
    import torch

    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AntiSpoofModel.from_hparams(
        source=args.model,
        savedir=args.savedir,
        run_opts={"device": args.device, "precision": args.precision},
    )
    if args.batch_size is None:
        args.batch_size = CPU_BATCH_SIZE if str(model.device) == "cpu" else DEFAULT_BATCH_SIZE
    if args.compile:
        seconds = model.compile_frontend(args.batch_size)
        print(f"nes2net-score: compiled the SSL model in {seconds:.0f} s", file=sys.stderr)
    return model


# ------------------------------------------- resumable, streaming scoring (--output FILE)
#
# With --output, the corpus scoring engine (speechbrain_nes2net.pretrained.
# corpus_scoring) reads the files lazily from the PATHs, scores them by chunks
# and appends them to a score log as batches finish; the output and failed.csv
# are written from the log(s) at the end. A rerun of the same command scores
# only what the log lacks.


def add_resume_arguments(parser):
    """Adds ``--restart``, ``--retry-failed`` and ``--chunk-size`` (used with ``--output``)."""
    group = parser.add_argument_group(
        "resuming (with --output: scores are logged to OUTPUT.scorelog as they come, "
        "and a rerun of the same command scores only the missing files)"
    )
    group.add_argument(
        "--restart", action="store_true", help="discard the score log and score every file again"
    )
    group.add_argument(
        "--retry-failed", action="store_true",
        help="score the files that failed in an earlier run again (they are final otherwise)",
    )  # fmt: skip
    group.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
        help=f"files planned and held at once (default {DEFAULT_CHUNK_SIZE}); bounds memory",
    )  # fmt: skip
    group.add_argument(
        "--shard", metavar="R/N",
        help="score shard R of N (0-based: every N-th file from the R-th) into "
        "OUTPUT.shard-R-of-N.scorelog; the run that completes the last shard writes OUTPUT",
    )  # fmt: skip


def check_resume_arguments(parser, args):
    """Rejects resume options that cannot apply."""
    if args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    if (args.restart or args.retry_failed or args.shard) and not args.output:
        parser.error(
            "--restart, --retry-failed and --shard need --output (the score logs live next to it)"
        )


def log_header(args):
    """What a run's scores depend on besides the inputs: the model and the score-changing options."""
    precision = "fp32"  # an ONNX export runs at its own precision (part of its hash)
    if args.engine == "torch":
        from speechbrain_nes2net.precision import resolve_precision

        precision = resolve_precision(args.precision, args.device)
    return {
        "tool": "nes2net-score",
        "model": model_source_fingerprint(args.model),
        "options": {"engine": args.engine, "precision": precision, "calibrated": not args.raw},
    }


def log_path_of(output):
    """The score log of each shard of ``--output``: ``OUTPUT.scorelog`` (one shard) or
    ``OUTPUT.shard-R-of-N.scorelog``."""
    output = Path(output)

    def log_path(rank, world_size):
        """The log of shard ``rank`` of ``world_size``."""
        if world_size == 1:
            return output.with_name(output.name + ".scorelog")
        return output.with_name(f"{output.name}.shard-{rank}-of-{world_size}.scorelog")

    return log_path


def write_from_log(log_paths, output, fmt, with_label, threshold):
    """Writes the output and ``failed.csv`` from complete score logs, in input order.

    Both are written to temporary files and renamed, so a full disk leaves
    the previous files and the logs as they were.

    Returns
    -------
    (int, int, list)
        Files scored, files failed, and the first few failures
        ``(ID, path, reason)``.
    """
    output = Path(output)
    failed_path = output.parent / "failed.csv"
    tmp_out = output.with_name(output.name + ".tmp")
    tmp_failed = failed_path.with_name(failed_path.name + ".tmp")
    n_ok, n_failed, examples = 0, 0, []
    with open(tmp_out, "w", encoding="utf-8", newline="") as out, open(
        tmp_failed, "w", encoding="utf-8", newline=""
    ) as failed:
        failures = csv.writer(failed, lineterminator="\n")
        failures.writerow(["ID", "path", "reason"])
        scores = csv.writer(out, lineterminator="\n")
        if fmt == "csv":
            scores.writerow(["ID", "score"] + (["label"] if with_label else []) + ["path"])
        for _, utt_id, status, fields in merged_records(log_paths):
            if status == FAILED:
                n_failed += 1
                failures.writerow([utt_id, fields[1], fields[0]])
                if len(examples) < 20:
                    examples.append((utt_id, fields[1], fields[0]))
                continue
            n_ok += 1
            score = float(fields[0])
            label = ""
            if with_label:
                label = fields[1] if threshold is None else LABELS[int(score >= threshold)]
            if fmt == "csv":
                scores.writerow([utt_id, f"{score:.6f}"] + ([label] if with_label else []) + [fields[2]])
            else:
                out.write(f"{utt_id} {score:.6f}{' ' + label if with_label else ''}\n")
        for handle in (out, failed):
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp_out, output)
    os.replace(tmp_failed, failed_path)
    return n_ok, n_failed, examples


def main_resumable(args):
    """``nes2net-score --output FILE``: streaming, resumable scoring (exit status as :func:`main`; 3: cannot write)."""
    output = Path(args.output)
    try:
        rank, world_size = resolve_shard(args.shard)
        scoring = CorpusScoring(
            lambda: iter_inputs(args.paths), log_path_of(output), log_header(args),
            (rank, world_size), restart=args.restart, chunk_size=args.chunk_size,
        )  # fmt: skip
    except (ValueError, ScoreLogError) as err:  # InputError is a ValueError
        print(f"nes2net-score: {err}", file=sys.stderr)
        return 2
    log, n_inputs = scoring.log, scoring.n_inputs
    model = None
    if not scoring.needs_scoring(args.retry_failed):
        print(
            f"nes2net-score: nothing to score: all {log.n_expected} files are in {log.path} "
            f"from an earlier run (--restart scores them again); writing {output}",
            file=sys.stderr,
        )
    else:
        if log.resumed and log.n_done:
            print(
                f"nes2net-score: resuming: {log.n_done} of {log.n_expected} files already in "
                f"{log.path}",
                file=sys.stderr,
            )
        import tqdm

        try:
            model = load_model(args)
        except Exception as err:  # noqa: BLE001  (any loading failure is a usage problem)
            print(f"nes2net-score: cannot load the model {args.model}: {err}", file=sys.stderr)
            return 2
        bar = tqdm.tqdm(
            total=log.n_expected, initial=log.n_done, unit="file", file=sys.stderr,
            disable=args.quiet,
        )  # fmt: skip
        try:
            with bar:
                scoring.score(
                    model, args.batch_size, args.max_batch_seconds, calibrated=not args.raw,
                    retry_failed=args.retry_failed, progress=bar.update,
                )  # fmt: skip
        except ScoreLogError as err:
            print(f"nes2net-score: {err}", file=sys.stderr)
            return 3
    waiting = scoring.incomplete_shards()
    if waiting:  # --shard: the process that completes the last shard writes the output
        print(
            f"nes2net-score: shard {rank} of {world_size} done; waiting for shards {waiting} "
            f"(run them with --shard=R/{world_size}); the last one writes {output}",
            file=sys.stderr,
        )
        return 0
    log_path = log.path if world_size == 1 else f"the logs {output}.shard-*-of-{world_size}.scorelog"
    fmt = args.format or ("csv" if str(output).lower().endswith(".csv") else "txt")
    with_label = args.labels or args.threshold is not None
    try:
        n_ok, n_failed, examples = write_from_log(
            scoring.log_paths, output, fmt, with_label, args.threshold
        )
    except OSError as err:
        print(
            f"nes2net-score: cannot write {output}: {err.strerror or err}; the scores are kept "
            f"in {log_path}: fix this and rerun the same command",
            file=sys.stderr,
        )
        return 3
    for utt_id, path, reason in examples:
        print(f"nes2net-score: cannot score {path} ({utt_id}): {reason}", file=sys.stderr)
    summary = f"nes2net-score: scored {n_ok} of {n_inputs} files"
    if model is None:
        summary += " (all in earlier runs)"
    details = ""
    if model is not None:
        stats = model.batch_stats
        details = (
            f" ({args.engine}, {model.precision}; {stats.batches} batches, "
            f"{100 * stats.padding_fraction:.1f}% of the computed audio was padding)"
        )
    if n_failed:
        where = output.parent / "failed.csv"
        print(f"{summary}, {n_failed} failed; failures in {where}{details}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary + details, file=sys.stderr)
    return 0


def localize_files(model, entries, segment_shift=None, threshold=None, progress=None):
    """Time ranges of each file (``AntiSpoofModel.localize``); a bad file is reported, not raised.

    Returns
    -------
    (list of (str, TimeRange), list of FileScore)
        (ID, range) rows of the localised files, and one result per entry
        (``error`` set for the failed ones, as :func:`write_failures` takes).
    """
    from speechbrain_nes2net.pretrained.scoring import FileScore

    rows, results = [], []
    for utt_id, path in entries:
        try:
            ranges = model.localize(path, segment_shift=segment_shift, threshold=threshold)
            rows.extend((utt_id, item) for item in ranges)
            results.append(FileScore(str(path)))
        except NotImplementedError:  # the model, not the file: stop
            raise
        except (AudioError, OSError, RuntimeError) as err:
            results.append(FileScore(str(path), error=str(err)))
        if progress is not None:
            progress(1)
    return rows, results


def write_failures(path, entries, results):
    """Writes ``ID,path,reason`` of the failed files (a header only when none failed)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "path", "reason"])
        for (utt_id, audio), result in zip(entries, results):
            if not result.ok:
                writer.writerow([utt_id, str(audio), result.error])


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 1 some files failed, 2 usage)."""
    args = parse_args(argv)
    if args.output and not args.frames:
        return main_resumable(args)
    try:
        entries = collect_inputs(args.paths)
    except InputError as err:
        print(f"nes2net-score: {err}", file=sys.stderr)
        return 2
    if not entries:
        print("nes2net-score: nothing to score", file=sys.stderr)
        return 2

    # Imported here so that --help and input errors answer at once.
    import tqdm

    try:
        model = load_model(args)
    except Exception as err:  # noqa: BLE001  (any loading failure is a usage problem)
        print(f"nes2net-score: cannot load the model {args.model}: {err}", file=sys.stderr)
        return 2

    with tqdm.tqdm(total=len(entries), unit="file", file=sys.stderr, disable=args.quiet) as bar:
        if args.frames:
            try:
                rows, results = localize_files(
                    model, entries, args.segment_shift, args.threshold, bar.update
                )
            except (NotImplementedError, ValueError) as err:
                print(f"nes2net-score: --frames: {err}", file=sys.stderr)
                return 2
        else:
            results = model.score_files(
                [path for _, path in entries],
                batch_size=args.batch_size,
                calibrated=not args.raw,
                progress=bar.update,
                max_batch_seconds=args.max_batch_seconds,
            )

    # Scores without --output go to stdout (to a file: main_resumable); time
    # ranges (--frames) to stdout or --output, written at the end.
    fmt = args.format or "txt"
    with_label = args.labels or args.threshold is not None

    def write(handle):
        """The ranges (--frames) or the scores."""
        if args.frames:
            from speechbrain_nes2net.evaluation.localization import write_ranges_csv

            write_ranges_csv(handle, rows)
        else:
            write_scores(handle, entries, results, fmt, with_label, args.threshold)

    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8", newline="") as handle:
            write(handle)
        write_failures(output.parent / "failed.csv", entries, results)
    else:
        buffer = io.StringIO()
        write(buffer)
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()

    failed = [(utt_id, result) for (utt_id, _), result in zip(entries, results) if not result.ok]
    for utt_id, result in failed:
        print(
            f"nes2net-score: cannot score {result.path} ({utt_id}): {result.error}", file=sys.stderr
        )
    stats = model.batch_stats
    summary = f"nes2net-score: scored {len(entries) - len(failed)} of {len(entries)} files"
    details = (
        f" ({args.engine}, {model.precision}; {stats.batches} batches, "
        f"{100 * stats.padding_fraction:.1f}% of the computed audio was padding)"
    )
    if failed:
        where = f"; failures in {Path(args.output).parent / 'failed.csv'}" if args.output else ""
        print(f"{summary}, {len(failed)} failed{where}{details}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary + details, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
