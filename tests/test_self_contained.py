"""The repository stands on its own: no tracked file reaches outside it.

A user clones the repository alone. Test data lives in ``tests/data/``, design
facts in ``docs/DESIGN.md``; a tracked file that reads or cites a folder beside
the checkout (a sibling ``shared`` folder of design notes and fixtures, say)
works only on the machine it was written on.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Spelled in pieces so that this file does not match its own patterns.
SIBLING = "shared"
FORBIDDEN = [
    # a relative path that climbs out of the checkout into the sibling folder
    re.compile(r"\.\./+" + SIBLING + r"\b"),
    # pathlib reaching for it: a parent folder joined with the sibling's name
    re.compile(r"parents?(\[\s*\d+\s*\])?\s*/\s*['\"]" + SIBLING + r"['\"]"),
    # citations of its files
    re.compile(SIBLING + r"/(fixtures|protocols|hooks|DESIGN\.md|STYLE\.md)\b"),
]
BINARY_SUFFIXES = {".pt", ".npy", ".flac", ".wav", ".png", ".onnx", ".ckpt"}


def tracked_files():
    """Files under version control (every file of the tree without git metadata)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", "build", "dist", "results"}
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not skip.intersection(path.relative_to(ROOT).parts)
        ]


def references_outside(text):
    """(line number, line) of every line of ``text`` that reaches outside the repository."""
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if any(pattern.search(line) for pattern in FORBIDDEN)
    ]


@pytest.mark.parametrize(
    "line",
    [
        'SHARED = Path(__file__).resolve().parents[1].parent / "{S}"',
        "FIXTURES = ROOT.parent / '{S}' / 'fixtures'",
        "Protocol lines come from ``../{S}/protocols/``",
        "see ../{S}/DESIGN.md section 7",
        "checked against {S}/fixtures/metrics_reference.json",
    ],
)
def test_references_outside_are_recognised(line):
    # Each line is one way the tests and docs once reached outside.
    line = line.format(S=SIBLING)
    assert references_outside(line) == [(1, line)]


def test_ordinary_uses_of_the_word_are_allowed():
    text = "a shared runner\nshared_run(tmp, name)\none shared convolution\n"
    assert references_outside(text) == []


def test_no_tracked_file_reaches_outside_the_repository():
    offenders = []
    files = tracked_files()
    assert len(files) > 50, f"only {len(files)} files found under {ROOT}"
    for path in files:
        if path.suffix in BINARY_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(ROOT)}:{number}: {line}"
            for number, line in references_outside(text)
        ]
    assert not offenders, (
        "tracked files reach outside the repository (a clone has nothing beside it; "
        "copy test data into tests/data/ and design facts into docs/):\n"
        + "\n".join(offenders)
    )


def test_every_test_data_file_is_described():
    described = (ROOT / "tests" / "data" / "README.md").read_text(encoding="utf-8")
    data = ROOT / "tests" / "data"
    missing = [
        str(path.relative_to(data))
        for path in sorted(data.rglob("*"))
        if path.is_file() and path.name != "README.md" and path.name not in described
    ]
    assert not missing, f"tests/data/README.md does not describe: {missing}"
