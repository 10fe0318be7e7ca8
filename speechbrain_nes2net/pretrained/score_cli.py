"""``nes2net-score``: score audio files with an exported model folder.

Usage::

    nes2net-score --model path/to/export --output scores.txt audio_dir/ more.flac list.txt
    python -m speechbrain_nes2net.pretrained.score_cli --model path/to/export audio_dir/ > scores.txt

Each PATH is an audio file, a folder (searched recursively for audio files), a
list file (one audio path per line, or ``ID path``; relative paths are relative
to the list file) or a CSV manifest of the toolkit (``ID`` and ``wav``
columns). Files are scored in batches of similar duration, at any sample rate
and channel count (see :class:`speechbrain_nes2net.pretrained.interface.AntiSpoofModel`).

Output: one ``ID score`` line per file (higher = more bona fide; the calibrated
LLR when the model carries a calibration, unless ``--raw``), plus the label
with ``--labels`` (the model's decision) or ``--threshold T`` (``bonafide``
when score >= T); ``--format csv`` (or an output name ending in ``.csv``)
writes a CSV with ``ID,score[,label],path``. IDs are file names without
extension (for folders: the path inside the folder without extension).

Files that cannot be scored (missing, corrupt, empty) are reported on stderr
and in ``failed.csv`` next to the output (``ID,path,reason``; written
whenever ``--output`` is given); the others are still scored, and the exit
status is 1 when any file failed, 2 for usage errors.

Engines: ``--model`` names an exported model folder (torch; ``--precision
bf16`` or ``auto`` runs the SSL front-end in bfloat16, see
:mod:`speechbrain_nes2net.precision`) or an ``.onnx`` file written by
``nes2net-export-onnx`` (onnxruntime, no torch model; ``--engine`` forces
either). Files, preprocessing, batches, windows and failures are handled by
the same code on both (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`).

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

from speechbrain_nes2net.audio import is_audio_path
from speechbrain_nes2net.precision import PRECISIONS
from speechbrain_nes2net.pretrained.scoring import DEFAULT_MAX_BATCH_SECONDS

LIST_SUFFIXES = {".txt", ".lst", ".list", ".scp"}
#: The values of ``--engine``.
ENGINES = ("auto", "torch", "onnxruntime")


class InputError(ValueError):
    """A PATH argument that does not name anything scorable."""


def _folder_files(folder):
    files = sorted(path for path in folder.rglob("*") if path.is_file() and is_audio_path(path))
    return [(path.relative_to(folder).with_suffix("").as_posix(), path) for path in files]


def _list_file(path):
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) > 2:
            raise InputError(
                f"{path}:{number}: expected 'path' or 'ID path', got {len(fields)} fields"
            )
        audio = Path(fields[-1]).expanduser()
        if not audio.is_absolute():
            audio = path.parent / audio
        utt_id = fields[0] if len(fields) == 2 else audio.stem
        entries.append((utt_id, audio))
    return entries


def _manifest(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ID", "wav"} <= set(reader.fieldnames):
            raise InputError(f"{path}: a CSV input needs 'ID' and 'wav' columns (a manifest)")
        return [(row["ID"], Path(row["wav"])) for row in reader]


def collect_inputs(paths):
    """Expands PATH arguments into ``(ID, audio path)`` pairs.

    Arguments
    ---------
    paths : list of str
        Audio files, folders, list files or CSV manifests.

    Returns
    -------
    list of (str, Path)

    Raises
    ------
    InputError
        For a PATH that does not exist or names nothing scorable, and for
        duplicate IDs.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "a.flac").write_bytes(b"")
    0
    >>> [utt_id for utt_id, _ in collect_inputs([str(folder)])]
    ['a']
    """
    entries = []
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = _folder_files(path)
            if not found:
                raise InputError(f"{path}: folder holds no audio files")
            entries.extend(found)
        elif path.suffix.lower() == ".csv" and path.is_file():
            entries.extend(_manifest(path))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            entries.extend(_list_file(path))
        elif path.exists() or is_audio_path(path):
            # A missing audio file is scored (and reported) like a corrupt one.
            entries.append((path.stem, path))
        else:
            raise InputError(f"{arg}: no such file or folder")
    seen = {}
    duplicates = set()
    for utt_id, path in entries:
        if utt_id in seen and seen[utt_id] != path:
            duplicates.add(utt_id)
        seen[utt_id] = path
    if duplicates:
        raise InputError(
            f"{len(duplicates)} IDs name different files, e.g. {sorted(duplicates)[:5]}; "
            "score them separately or use a list file with 'ID path' lines"
        )
    return entries


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
    parser.add_argument("--model", required=True, help="exported model folder (or model hub id)")
    parser.add_argument("--output", help="output file (default: stdout)")
    parser.add_argument(
        "--format",
        choices=("txt", "csv"),
        help="output format (default: csv for a .csv output, else txt)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="files per batch (default 8)")
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
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
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def _label(result, threshold):
    if threshold is not None:
        return "bonafide" if result.score >= threshold else "spoof"
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


def write_failures(path, entries, results):
    """Writes ``ID,path,reason`` of the failed files (a header only when none failed)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "path", "reason"])
        for (utt_id, audio), result in zip(entries, results):
            if not result.ok:
                writer.writerow([utt_id, str(audio), result.error])


def load_model(args):
    """The scoring model the arguments name: AntiSpoofModel (torch) or OnnxAntiSpoofModel."""
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.engine == "onnxruntime":
        from speechbrain_nes2net.pretrained.onnx_model import OnnxAntiSpoofModel

        if not Path(args.model).is_file():
            raise FileNotFoundError(f"{args.model}: no such ONNX file")
        return OnnxAntiSpoofModel(args.model, threads=args.threads)
    import torch

    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    if args.threads:
        torch.set_num_threads(args.threads)
    return AntiSpoofModel.from_hparams(
        source=args.model,
        savedir=args.savedir,
        run_opts={"device": args.device, "precision": args.precision},
    )


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 1 some files failed, 2 usage)."""
    args = parse_args(argv)
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
        results = model.score_files(
            [path for _, path in entries],
            batch_size=args.batch_size,
            calibrated=not args.raw,
            progress=bar.update,
            max_batch_seconds=args.max_batch_seconds,
        )

    fmt = args.format or ("csv" if (args.output or "").lower().endswith(".csv") else "txt")
    with_label = args.labels or args.threshold is not None
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8", newline="") as handle:
            write_scores(handle, entries, results, fmt, with_label, args.threshold)
        write_failures(output.parent / "failed.csv", entries, results)
    else:
        buffer = io.StringIO()
        write_scores(buffer, entries, results, fmt, with_label, args.threshold)
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
