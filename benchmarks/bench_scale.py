"""Peak memory of ``nes2net-score --output`` against the number of files.

Writes 20 short synthetic FLAC files (0.3-0.6 s of noise) and list files that
name them over and over under distinct IDs (20k and 200k lines by default),
then scores each list in a fresh process and reports its peak resident set
size (``ru_maxrss`` of the child, from ``os.wait4``) and wall time. Memory
flat in the number of files means the two peaks agree within a few percent.

Run: ``python benchmarks/bench_scale.py --model EXPORTED_MODEL_FOLDER``
(e.g. the ``pretrained/`` folder of a demo run:
``python recipes/train.py hparams/demo.yaml --output_folder=results/demo``);
``--counts 2000 20000`` for a quicker run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def write_corpus(folder, counts, n_audio=20, seed=0):
    """The audio files and one list file per count; returns {count: list path}."""
    rng = np.random.default_rng(seed)
    audio = Path(folder) / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for index in range(n_audio):
        samples = int(16000 * rng.uniform(0.3, 0.6))
        sf.write(audio / f"f{index}.flac", (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
    lists = {}
    for count in counts:
        path = Path(folder) / f"list{count}.txt"
        with open(path, "w", encoding="utf-8") as handle:
            for index in range(count):
                handle.write(f"u{index:07d} {audio}/f{index % n_audio}.flac\n")
        lists[count] = path
    return lists


def peak_rss(command, env):
    """Runs ``command``; returns (exit status, peak RSS in MiB, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed ({process.returncode}):\n{stderr[-3000:]}")
    return process.returncode, usage.ru_maxrss / 1024, time.perf_counter() - start


def main(argv=None):
    """Scores each list in a fresh process and prints peak RSS per file count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--counts", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", help="where the files go (default: a temporary folder)")
    args = parser.parse_args(argv)
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    lists = write_corpus(folder, args.counts)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    rows = []
    for count, listing in lists.items():
        out = folder / f"scores{count}.txt"
        command = [
            sys.executable, "-m", "speechbrain_nes2net.pretrained.score_cli", "--model", args.model,
            "--output", str(out), "--quiet", "--restart", "--threads", "1",
            "--batch-size", str(args.batch_size), str(listing),
        ]  # fmt: skip
        _, rss, seconds = peak_rss(command, env)
        lines = sum(1 for _ in open(out, encoding="utf-8"))
        assert lines == count, f"{out}: {lines} lines for {count} files"
        rows.append((count, rss, seconds))
        print(f"{count:>8} files: peak RSS {rss:8.1f} MiB, {seconds:7.1f} s", flush=True)
    base = rows[0][1]
    for count, rss, _ in rows[1:]:
        print(f"peak RSS at {count} / at {rows[0][0]} files: {rss / base:.3f}")


if __name__ == "__main__":
    main()
