"""``nes2net-score``: score audio files with an exported model folder or ONNX file.

Usage::

    nes2net-score --model path/to/export --output scores.txt audio_dir/ more.flac list.txt
    python -m speechbrain_nes2net.pretrained.score_cli --model path/to/export audio_dir/ > scores.txt

PATHs are expanded by :mod:`speechbrain_nes2net.pretrained.inputs`; files are
scored by the corpus engine (:mod:`speechbrain_nes2net.pretrained.corpus_scoring`)
into a score log (``OUTPUT.scorelog``; a temporary one without ``--output``),
then written in input order as ``ID score[ label]`` lines or CSV. ``--frames``
writes a localisation model's time ranges instead. ``--compile`` compiles the torch
model's SSL front-end first (``torch.compile``; for long jobs, see docs/DEPLOYING.md). Failed files go to stderr
and ``failed.csv``. Exit status: 0 all scored, 1 some files failed, 2 usage
errors, 3 the log or the output cannot be written. See docs/PRETRAINED.md
and docs/SCALE.md. ``--condition NAME`` (e.g. ``mp3_32k``, ``telephone``:
:mod:`speechbrain_nes2net.codecs`) passes every file through that codec or channel
first; a file the codec cannot take is reported as failed.

Authors
 * speechbrain-nes2net contributors
"""

import argparse
import csv
import logging
import os
import sys
import tempfile
from pathlib import Path

from speechbrain_nes2net.audio import AudioError
from speechbrain_nes2net.codecs import resolve_conditions
from speechbrain_nes2net.evaluation.score_log import (
    DEFAULT_CHUNK_SIZE,
    FAILED,
    ScoreLogError,
    merged_records,
)
from speechbrain_nes2net.precision import PRECISIONS, resolve_precision
from speechbrain_nes2net.pretrained.corpus_scoring import CorpusScoring, resolve_shard
from speechbrain_nes2net.pretrained.inputs import InputError, collect_inputs, iter_inputs
from speechbrain_nes2net.pretrained.model_identity import model_source_fingerprint
from speechbrain_nes2net.pretrained.scoring import DEFAULT_MAX_BATCH_SECONDS
from speechbrain_nes2net.scores import LABELS

#: Files per batch unless ``--batch-size`` says otherwise; the torch engine on a
#: CPU: :data:`CPU_BATCH_SIZE`.
DEFAULT_BATCH_SIZE = 8
#: Failed files named on stderr when ``failed.csv`` lists them all.
SHOWN_FAILURES = 20
#: Per precision, measured on WavLM-Large (docs/DEPLOYING.md): on a CPU, fp32
#: files of equal length cost 4% less in batches of 2 or 4 than alone; bf16
#: ones 1% more in pairs, 4% more in fours (and a batch also computes its padding).
CPU_BATCH_SIZE = {"fp32": 2, "bf16": 1}


def parse_args(argv=None):
    """Parses the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="nes2net-score",
        description="Score audio files with an exported speechbrain-nes2net model "
        "(higher = more bona fide).",
    )
    # fmt: off
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="audio files, folders, list files or CSV manifests")
    add("--model", required=True,
        help="exported model folder, model hub id, or .onnx file (nes2net-export-onnx)")
    add("--output",
        help="output file (default: stdout); resumable: rerun the same command after a crash")
    add("--format", choices=("txt", "csv"),
        help="output format (default: csv for a .csv output, else txt)")
    add("--batch-size", type=int,
        help=f"files per batch (default {DEFAULT_BATCH_SIZE}; the torch engine on a CPU: "
        f"{CPU_BATCH_SIZE['fp32']} in fp32, {CPU_BATCH_SIZE['bf16']} in bf16, as measured "
        "on WavLM-Large)")
    add("--max-batch-seconds", type=float, default=DEFAULT_MAX_BATCH_SECONDS,
        help=f"most padded audio per batch (default {DEFAULT_MAX_BATCH_SECONDS:g} s)")
    add("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    add("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
        help="torch (a model folder) or onnxruntime (an .onnx export); auto: by --model")
    add("--precision", choices=PRECISIONS, default="fp32",
        help="torch engine: fp32 (default), bf16 (SSL front-end in bfloat16), or auto "
        "(bf16 where the CPU/GPU computes it natively)")
    add("--threads", type=int, help="CPU threads of the engine (default: torch's / onnxruntime's)")
    add("--compile", action="store_true",
        help="torch engine: torch.compile the SSL model first (a minute or two for a Large "
        "model; pays on long jobs, see docs/DEPLOYING.md)")
    add("--savedir", help="where SpeechBrain collects the model files")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--labels", action="store_true",
        help="add the model's decision (bonafide/spoof, at the threshold shipped with the model)")
    decision.add_argument("--threshold", type=float,
                          help="add a label: bonafide when score >= THRESHOLD")
    add("--raw", action="store_true", help="raw scores even when the model carries a calibration")
    add("--frames", action="store_true",
        help="localisation models: write where each file is spoofed, as CSV rows "
        "ID,start,end,label,score (time ranges in seconds)")
    add("--segment-shift", type=float,
        help="with --frames: decision resolution in seconds (default: the model's)")
    add("--quiet", action="store_true", help="no progress bar")
    group = parser.add_argument_group(
        "resuming (with --output: scores are logged to OUTPUT.scorelog as they come, "
        "and a rerun of the same command scores only the missing files)"
    )
    add("--condition", metavar="NAME",
        help="pass every file through this codec or channel first (e.g. mp3_32k; "
        "speechbrain_nes2net.codecs.CONDITIONS)")
    group.add_argument("--restart", action="store_true",
                       help="discard the score log and score every file again")
    group.add_argument("--retry-failed", action="store_true",
        help="score the files that failed in an earlier run again (they are final otherwise)")
    group.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
        help=f"files planned and held at once (default {DEFAULT_CHUNK_SIZE}); bounds memory")
    group.add_argument("--shard", metavar="R/N",
        help="score shard R of N (0-based: every N-th file from the R-th) into "
        "OUTPUT.shard-R-of-N.scorelog; the run that completes the last shard writes OUTPUT")
    # fmt: on
    args = parser.parse_args(argv)
    if args.condition is not None:
        try:
            resolve_conditions([args.condition])
        except (ValueError, ImportError) as err:
            parser.error(f"--condition: {err}")
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
    if args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    if (args.restart or args.retry_failed or args.shard) and not args.output:
        parser.error(
            "--restart, --retry-failed and --shard need --output (the score logs live next to it)"
        )
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


def _say(message):
    """Prints a line of the command's report on stderr."""
    print(f"nes2net-score: {message}", file=sys.stderr)


def _load(args):
    """:func:`load_model`, or None after saying why it failed (a usage problem: exit status 2)."""
    try:
        return load_model(args)
    except Exception as err:  # noqa: BLE001  (any loading failure is a usage problem)
        _say(f"cannot load the model {args.model}: {err}")
        return None


def load_model(args):
    """The scoring model the arguments name: AntiSpoofModel (torch) or OnnxAntiSpoofModel.

    Sets ``args.batch_size`` when ``--batch-size`` was not given:
    :data:`CPU_BATCH_SIZE` of its precision for the torch engine on a CPU, else
    :data:`DEFAULT_BATCH_SIZE`. With ``--compile``, compiles the SSL model.
    """
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.engine == "onnxruntime":
        from speechbrain_nes2net.pretrained.onnx_model import OnnxAntiSpoofModel

        if not Path(args.model).is_file():
            raise FileNotFoundError(f"{args.model}: no such ONNX file")
        args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
        model = OnnxAntiSpoofModel(args.model, threads=args.threads)
        model.condition = args.condition
        return model
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
        on_cpu = str(model.device) == "cpu"
        args.batch_size = CPU_BATCH_SIZE[model.precision] if on_cpu else DEFAULT_BATCH_SIZE
    if args.compile:
        seconds = model.compile_frontend(args.batch_size)
        print(f"nes2net-score: compiled the SSL model in {seconds:.0f} s", file=sys.stderr)
    model.condition = args.condition
    return model


def log_header(args):
    """What a run's scores depend on besides the inputs: the model and the score-changing options."""
    # An ONNX export runs at its own precision (part of its hash).
    precision = resolve_precision(args.precision, args.device) if args.engine == "torch" else "fp32"
    options = {"engine": args.engine, "precision": precision, "calibrated": not args.raw}
    if args.condition:
        options["condition"] = args.condition
    return {"tool": "nes2net-score", "model": model_source_fingerprint(args.model), "options": options}


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


def write_from_log(log_paths, out, failed, fmt, with_label, threshold):
    """Writes the scores of complete score logs to ``out`` in input order, the failures to
    ``failed`` (a CSV writer, or None).

    Returns
    -------
    (int, int, list)
        Files scored, files failed, and the failures ``(ID, path, reason)``
        to name on stderr (the first :data:`SHOWN_FAILURES` when ``failed``
        lists them all).
    """
    n_ok, n_failed, examples = 0, 0, []
    scores = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        scores.writerow(["ID", "score"] + (["label"] if with_label else []) + ["path"])
    for _, utt_id, status, fields in merged_records(log_paths):
        if status == FAILED:
            n_failed += 1
            if failed is not None:
                failed.writerow([utt_id, fields[1], fields[0]])
            if failed is None or len(examples) < SHOWN_FAILURES:
                examples.append((utt_id, fields[1], fields[0]))
            continue
        n_ok += 1
        score = float(fields[0])
        label = fields[1] if threshold is None else LABELS[int(score >= threshold)]
        label = [label] if with_label else []
        if fmt == "csv":
            scores.writerow([utt_id, f"{score:.6f}"] + label + [fields[2]])
        else:
            out.write(" ".join([utt_id, f"{score:.6f}"] + label) + "\n")
    return n_ok, n_failed, examples


def _write_output(log_paths, output, fmt, with_label, threshold):
    """:func:`write_from_log` into ``output`` and ``failed.csv`` beside it, through temporary
    files and renames (a full disk leaves the previous files and the logs as they were)."""
    failed_path = output.parent / "failed.csv"
    tmp_out = output.with_name(output.name + ".tmp")
    tmp_failed = failed_path.with_name(failed_path.name + ".tmp")
    with open(tmp_out, "w", encoding="utf-8", newline="") as out, open(
        tmp_failed, "w", encoding="utf-8", newline=""
    ) as failed:
        failures = csv.writer(failed, lineterminator="\n")
        failures.writerow(["ID", "path", "reason"])
        counts = write_from_log(log_paths, out, failures, fmt, with_label, threshold)
        for handle in (out, failed):
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp_out, output)
    os.replace(tmp_failed, failed_path)
    return counts


def score_to_log(args, folder):
    """Scores the PATHs into score logs (next to ``--output``, else in ``folder``) and writes
    the output; returns the exit status."""
    output = Path(args.output) if args.output else None
    try:
        rank, world_size = resolve_shard(args.shard)
        scoring = CorpusScoring(
            lambda: iter_inputs(args.paths),
            log_path_of(output or Path(folder) / "scores"),
            log_header(args) if output else {"tool": "nes2net-score"},  # a fresh log: no check
            (rank, world_size), restart=args.restart, chunk_size=args.chunk_size,
        )  # fmt: skip
    except (ValueError, ScoreLogError) as err:  # InputError is a ValueError
        _say(err)
        return 2
    log, model = scoring.log, None
    if not scoring.needs_scoring(args.retry_failed):
        _say(f"nothing to score: all {log.n_expected} files are in {log.path} from an earlier "
             f"run (--restart scores them again); writing {output}")  # fmt: skip
    else:
        if log.resumed and log.n_done:
            _say(f"resuming: {log.n_done} of {log.n_expected} files already in {log.path}")
        import tqdm

        model = _load(args)
        if model is None:
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
            _say(err)
            return 3
    waiting = scoring.incomplete_shards()
    if waiting:  # --shard: the process that completes the last shard writes the output
        _say(f"shard {rank} of {world_size} done; waiting for shards {waiting} (run them with "
             f"--shard=R/{world_size}); the last one writes {output}")  # fmt: skip
        return 0
    fmt = args.format or ("csv" if str(output).lower().endswith(".csv") else "txt")
    with_label = args.labels or args.threshold is not None
    if output is None:
        n_ok, n_failed, examples = write_from_log(
            scoring.log_paths, sys.stdout, None, fmt, with_label, args.threshold
        )
        sys.stdout.flush()
    else:
        try:
            n_ok, n_failed, examples = _write_output(
                scoring.log_paths, output, fmt, with_label, args.threshold
            )
        except OSError as err:
            where = log.path
            if world_size > 1:
                where = f"the logs {output}.shard-*-of-{world_size}.scorelog"
            _say(f"cannot write {output}: {err.strerror or err}; the scores are kept in {where}: "
                 "fix this and rerun the same command")  # fmt: skip
            return 3
    for utt_id, path, reason in examples:
        _say(f"cannot score {path} ({utt_id}): {reason}")
    return _summary(args, model, n_ok, n_failed, scoring.n_inputs)


def _summary(args, model, n_ok, n_failed, n_inputs):
    """Prints the run's summary line; returns the exit status (1 when files failed)."""
    summary = f"scored {n_ok} of {n_inputs} files"
    details = ""
    if model is None:
        summary += " (all in earlier runs)"
    else:
        stats = model.batch_stats
        details = (
            f" ({args.engine}, {model.precision}; {stats.batches} batches, "
            f"{100 * stats.padding_fraction:.1f}% of the computed audio was padding)"
        )
    if n_failed:
        where = f"; failures in {Path(args.output).parent / 'failed.csv'}" if args.output else ""
        _say(f"{summary}, {n_failed} failed{where}{details}")
        return 1
    if not args.quiet:
        _say(summary + details)
    return 0


def localize(args):
    """``--frames``: the time ranges of each file (``AntiSpoofModel.localize``); returns the exit
    status."""
    from speechbrain_nes2net.evaluation.localization import write_ranges_csv

    try:
        entries = collect_inputs(args.paths)
    except InputError as err:
        _say(err)
        return 2
    if not entries:
        _say("nothing to score")
        return 2
    import tqdm

    model = _load(args)
    if model is None:
        return 2
    rows, failures = [], []
    bar = tqdm.tqdm(total=len(entries), unit="file", file=sys.stderr, disable=args.quiet)
    try:
        with bar:
            for utt_id, path in entries:
                try:
                    ranges = model.localize(path, args.segment_shift, args.threshold)
                    rows.extend((utt_id, item) for item in ranges)
                except (AudioError, OSError, RuntimeError) as err:
                    if isinstance(err, NotImplementedError):  # the model, not the file: stop
                        raise
                    failures.append((utt_id, path, str(err)))
                bar.update(1)
    except (NotImplementedError, ValueError) as err:
        _say(f"--frames: {err}")
        return 2
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8", newline="") as handle:
            write_ranges_csv(handle, rows)
        with open(output.parent / "failed.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows([("ID", "path", "reason"), *failures])
    else:
        write_ranges_csv(sys.stdout, rows)
        sys.stdout.flush()
    for utt_id, path, reason in failures:
        _say(f"cannot score {path} ({utt_id}): {reason}")
    return _summary(args, model, len(entries) - len(failures), len(failures), len(entries))


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 1 some files failed, 2 usage, 3 I/O)."""
    args = parse_args(argv)
    if args.frames:
        return localize(args)
    if args.output:
        return score_to_log(args, None)
    with tempfile.TemporaryDirectory(prefix="nes2net_score_") as folder:
        return score_to_log(args, folder)


if __name__ == "__main__":
    sys.exit(main())
