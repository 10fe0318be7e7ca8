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

LIST_SUFFIXES = {".txt", ".lst", ".list", ".scp"}


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
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
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
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.frames and args.labels:
        parser.error("--frames writes labels already; --labels does not apply")
    if args.segment_shift is not None and not args.frames:
        parser.error("--segment-shift applies with --frames only")
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


def localize_files(model, entries, segment_shift=None, threshold=None, progress=None):
    """Time ranges of each file (``AntiSpoofModel.localize``); a bad file is reported, not raised.

    Returns
    -------
    (list of (str, TimeRange), list of FileScore)
        (ID, range) rows of the localised files, and one result per entry
        (``error`` set for the failed ones, as :func:`write_failures` takes).
    """
    from speechbrain_nes2net.audio import AudioError
    from speechbrain_nes2net.pretrained.interface import FileScore

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

    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        model = AntiSpoofModel.from_hparams(
            source=args.model, savedir=args.savedir, run_opts={"device": args.device}
        )
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
            )

    fmt = args.format or ("csv" if (args.output or "").lower().endswith(".csv") else "txt")
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
    summary = f"nes2net-score: scored {len(entries) - len(failed)} of {len(entries)} files"
    if failed:
        where = f"; failures in {Path(args.output).parent / 'failed.csv'}" if args.output else ""
        print(f"{summary}, {len(failed)} failed{where}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
