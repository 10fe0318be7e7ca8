"""``nes2net-app`` in a real browser: headless Chromium drives the page of a demo model.

Debian's ``chromium`` (``.ci/run`` installs it) through Playwright, on a free
local port. The detection page runs from a Hugging Face Space folder written
by ``nes2net-app --write-space`` (its ``app.py``), on the demo model exported
with a calibration; the localisation page from ``nes2net-app --model`` on the
localisation demo. Each page must:

- show for an uploaded demo test file the score, label and (calibrated)
  posterior that ``nes2net-score`` gives, to 1e-4, and the model card's error
  rates at the shipped threshold;
- show a corrupt file's reason as ``nes2net-score`` gives it, and still score
  the rest of the batch, in the table and the CSV it offers;
- score a recording (Chromium's fake microphone);
- for the localisation model, list and draw the spoofed ranges that
  ``nes2net-score --frames`` returns;
- fetch nothing from other hosts.

An ONNX export is scored the same way (without a browser), and gradio stays
out of the library and the other command lines.

With ``NES2NET_SCREENSHOTS=docs/images`` the screenshots of the README are
written there (else into a temporary folder).
"""

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from ffmpeg_audio import write_with_ffmpeg
from playwright.sync_api import expect, sync_playwright

from speechbrain_nes2net.evaluation.calibration import fit_calibration
from speechbrain_nes2net.pretrained.app import main as app_main
from speechbrain_nes2net.pretrained.app import parse_args, score_uploads
from speechbrain_nes2net.pretrained.export import ExportOptions, export_run
from speechbrain_nes2net.pretrained.onnx_export import export_onnx
from speechbrain_nes2net.pretrained.score_cli import load_model
from speechbrain_nes2net.pretrained.score_cli import main as score_main
from test_localization_inference import read_ranges_csv

# One torch thread, as in the page's server (serving sets OMP_NUM_THREADS=1): the page's scores
# are compared with nes2net-score's to 1e-4, and the thread count changes the order of float sums.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
#: Debian's Chromium; Playwright's own browser download is not used.
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # fmt: skip
#: The rows of the result table, as {cell class: text}.
ROWS = """() => Array.from(document.querySelectorAll('#scores tr')).slice(1).map(
    tr => Object.fromEntries(Array.from(tr.children).map(td => [td.className, td.textContent])))"""
#: The recording's copy on the server, once uploaded.
RECORDING = "#record a[data-testid=download-link][href*='gradio_api/file=']"
KNOWN = "CON_E_0000005"  # the localisation demo's eval file with a spliced stretch


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def calibrated(demo, tmp_path_factory):
    """The demo run exported with a calibration, so that the page has a posterior to show.

    The demo's development set is too small for one (the run ships its EER
    threshold); the calibration is fitted on its test scores instead.
    """
    run = demo[0].parent
    rows = [line.split() for line in (run / "scores" / "demo_test_scores.txt").open()]
    bona = [float(score) for utt, score in rows if utt.endswith("bonafide")]
    spoof = [float(score) for utt, score in rows if utt.endswith("spoof")]
    options = ExportOptions(calibration=fit_calibration(bona, spoof))
    return export_run(run, tmp_path_factory.mktemp("calibrated") / "demo", options=options)


def screenshot(page, name, tmp_path):
    folder = Path(os.environ.get("NES2NET_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => document.fonts.ready.then(() => true)")
    page.screenshot(path=str(folder / name), full_page=True)


@contextlib.contextmanager
def serving(command, cwd, tmp_path):
    """Runs a page on a free local port until the block ends; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # this checkout's code
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", GRADIO_SERVER_PORT=str(port),
               GRADIO_TEMP_DIR=str(tmp_path / "uploads"), PYTHONPATH=path)  # fmt: skip
    log = tmp_path / "server.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=handle)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"the page stopped:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no page at {url}:\n{log.read_text()[-4000:]}"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=5).close()
                break
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def scored(browser, url, files=(), record=False):
    """Opens the page, uploads ``files`` (or records), presses Score.

    Returns the page, its result rows and the URLs it requested from other hosts.
    """
    page, elsewhere = browser.new_page(), []
    local = (url, "data:", "blob:")
    page.on("request", lambda r: r.url.startswith(local) or elsewhere.append(r.url))
    page.goto(url)
    if files:
        page.locator("#upload input[type=file]").set_input_files([str(path) for path in files])
        for path in files:  # uploaded (the list shows the name and the suffix apart)
            expect(page.locator("#upload")).to_contain_text(Path(path).stem, timeout=60_000)
    if record:
        page.locator("#record").get_by_role("button", name="Record").click()
        time.sleep(2)
        page.locator("#record").get_by_role("button", name="Stop").first.click()
        page.locator(RECORDING).wait_for(state="attached", timeout=60_000)  # uploaded
    page.click("#score-button")
    page.locator("#result table#scores").wait_for(timeout=180_000)
    return page, page.evaluate(ROWS), elsewhere


def cli_scores(model, files, capsys, extra=()):
    """nes2net-score's (score, label) per ID and reason per failed ID, at the page's precision."""
    capsys.readouterr()
    code = score_main(["--model", str(model), "--precision", "auto", "--labels", "--quiet",
                       *extra, *map(str, files)])  # fmt: skip
    out, err = capsys.readouterr()
    scores = {utt: (float(score), label) for utt, score, label in map(str.split, out.splitlines())}
    reasons = dict(re.findall(r"cannot score \S+ \((\S+)\): (.*)", err))
    return code, scores, reasons


def test_without_gradio_it_says_what_to_install_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import speechbrain_nes2net.pretrained.app as app

    def no_gradio(name):
        raise app.PackageNotFoundError(name)

    monkeypatch.setattr(app, "version", no_gradio)  # as on a machine without the app extra
    space = tmp_path / "space"
    assert app_main(["--model", str(tmp_path), "--write-space", str(space)]) == 2
    assert "needs gradio: pip install 'speechbrain-nes2net[app]'" in capsys.readouterr().err
    assert not space.exists()


def test_space_page_scores_files_as_nes2net_score(calibrated, demo, browser, tmp_path, capsys):
    space = tmp_path / "space"
    assert app_main(["--model", str(calibrated), "--write-space", str(space)]) == 0
    assert (space / "requirements.txt").read_text() == "speechbrain-nes2net[app]\n"
    assert "sdk: gradio" in (space / "README.md").read_text()
    assert (space / "model" / "hyperparams.yaml").is_file()
    files = demo[1][:2]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot really audio")
    # What a phone uploads: the second file as AAC in M4A (decoded through FFmpeg).
    phone = write_with_ffmpeg(tmp_path / "phone.m4a", *sf.read(files[1], dtype="float32"))
    code, expected, reasons = cli_scores(calibrated, [*files, phone, corrupt], capsys)
    assert code == 1 and set(reasons) == {"corrupt"}
    yaml = (calibrated / "hyperparams.yaml").read_text()
    decision = json.loads(re.search(r"^decision: (.*)$", yaml, re.MULTILINE)[1])
    assert decision["source"] == "calibration"
    metrics = json.loads((demo[0].parent / "scores" / "demo_test_metrics.json").read_text())

    with serving([sys.executable, "app.py"], space, tmp_path) as url:
        # One file: score, decision, posterior at the decision's prior, the card's error rates.
        page, rows, elsewhere = scored(browser, url, files[:1])
        score, label = expected[files[0].stem]
        assert [row["file"] for row in rows] == [files[0].name] and rows[0]["error"] == ""
        assert abs(float(rows[0]["score"]) - score) <= 1e-4 and rows[0]["label"] == label
        log_odds = score + math.log(decision["prior"] / (1 - decision["prior"]))
        assert abs(float(rows[0]["p_bonafide"]) - 1 / (1 + math.exp(-log_odds))) <= 1e-4
        rates = page.locator("#result ul.rates li").all_inner_texts()
        test_rates = (f"demo_test: {100 * metrics['bpcer']:.2f}% of bona fide rejected, "
                      f"{100 * metrics['apcer']:.2f}% of spoofs accepted (60 / 60 trials)")  # fmt: skip
        assert test_rates in rates
        screenshot(page, "app_score.png", tmp_path)

        # A batch with a phone's M4A and a corrupt file: its reason, the others scored, the
        # same in the CSV.
        page, rows, more = scored(browser, url, [*files, phone, corrupt])
        assert [row["file"] for row in rows] == [path.name for path in [*files, phone, corrupt]]
        for path, row in zip([*files, phone], rows):
            assert row["error"] == "" and abs(float(row["score"]) - expected[path.stem][0]) <= 1e-4
        reason = reasons["corrupt"].replace(str(corrupt), corrupt.name)
        assert rows[3]["score"] == "" and rows[3]["error"] == reason
        table = page.request.get(page.locator("#csv a").first.get_attribute("href")).text()
        table = list(csv.DictReader(io.StringIO(table)))
        assert [row["file"] for row in table] == [row["file"] for row in rows]
        assert [row["error"] for row in table] == ["", "", "", reason]
        for path, row in zip([*files, phone], table):
            assert abs(float(row["score"]) - expected[path.stem][0]) <= 1e-4
        screenshot(page, "app_batch.png", tmp_path)

        # A recording from the fake microphone is scored as nes2net-score scores its file.
        page, rows, others = scored(browser, url, record=True)
        recording = tmp_path / "recording.wav"
        href = page.locator(RECORDING).get_attribute("href")
        recording.write_bytes(page.request.get(href).body())
        _, expected, _ = cli_scores(calibrated, [recording], capsys)
        assert len(rows) == 1 and rows[0]["error"] == ""
        assert abs(float(rows[0]["score"]) - expected["recording"][0]) <= 1e-4
        assert rows[0]["label"] == expected["recording"][1]
    assert elsewhere + more + others == []


def test_localisation_page_draws_the_ranges_of_nes2net_score_frames(
    localization_demo, browser, tmp_path
):
    out, database, _ = localization_demo
    model = out / "pretrained"
    known = database / "eval" / "con_wav" / f"{KNOWN}.wav"
    wavs = [known] + [w for w in sorted(known.parent.glob("*.wav")) if w != known][:1]
    ranges_csv = tmp_path / "ranges.csv"
    code = score_main(["--model", str(model), "--frames", "--precision", "auto", "--quiet",
                       "--output", str(ranges_csv), *map(str, wavs)])  # fmt: skip
    assert code == 0
    spoofed = {utt: [f"{r.start:g}-{r.end:g}" for r in ranges if r.label == "spoof"]
               for utt, ranges in read_ranges_csv(ranges_csv).items()}  # fmt: skip
    assert spoofed[KNOWN], "the known file's splice should be found (else this test checks nothing)"
    command = [sys.executable, "-m", "speechbrain_nes2net.pretrained.app", "--model", str(model),
               "--savedir", str(tmp_path / "savedir")]  # fmt: skip
    with serving(command, ROOT, tmp_path) as url:
        page, rows, elsewhere = scored(browser, url, wavs)
        listed = {row["file"]: row["spoofed_ranges"] for row in rows}
        assert listed == {w.name: "; ".join(spoofed[w.stem]) or "none" for w in wavs}
        drawn = page.evaluate("""() => Object.fromEntries(Array.from(
            document.querySelectorAll('#result figure.frames')).map(figure => [figure.dataset.file,
            Array.from(figure.querySelectorAll('g[id^="spoof-"]')).map(group => group.id)]))""")
        assert drawn == {w.name: [f"spoof-{span}" for span in spoofed[w.stem]] for w in wavs}
        shade = page.locator(f"#result figure[data-file='{KNOWN}.wav'] g[id^='spoof-']").first
        assert shade.bounding_box()["width"] > 10  # drawn, not just present
        screenshot(page, "app_localization.png", tmp_path)
    assert elsewhere == []


def test_an_onnx_file_is_scored_as_nes2net_score_scores_it_and_makes_a_space(
    calibrated, demo, tmp_path, capsys
):
    onnx = export_onnx(calibrated, tmp_path / "demo.onnx")
    (tmp_path / "README.md").write_text((calibrated / "README.md").read_text())  # its card
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC not really")
    args = parse_args(["--model", str(onnx)])
    rows = score_uploads(load_model(args), [*demo[1][:2], corrupt], args.batch_size)
    _, expected, reasons = cli_scores(onnx, [*demo[1][:2], corrupt], capsys)
    for path, row in zip(demo[1][:2], rows):
        score, label = expected[path.stem]
        assert abs(row["score"] - score) <= 1e-4 and row["label"] == label
        assert abs(row["p_bonafide"] - 1 / (1 + math.exp(-score))) <= 1e-4  # prior 0.5
    assert rows[2]["error"] == reasons["corrupt"].replace(str(corrupt), corrupt.name)
    assert app_main(["--model", str(onnx), "--write-space", str(tmp_path / "space")]) == 0
    assert (tmp_path / "space" / "requirements.txt").read_text() == "speechbrain-nes2net[app,onnx]\n"
    assert sorted(path.name for path in (tmp_path / "space" / "model").iterdir()) == [
        "README.md", "demo.onnx"]  # fmt: skip
    assert app_main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_gradio_and_the_exporters_stay_out_of_the_library_and_the_clis():
    """gradio is imported when the page is built, and the page imports no exporter."""
    code = ("import sys, speechbrain_nes2net.pretrained.app as app, "
            "speechbrain_nes2net.pretrained.score_cli, speechbrain_nes2net.pretrained.interface; "
            "app.parse_args(['--model', 'x']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio' "
            "or m.startswith(('speechbrain_nes2net.pretrained.export', "
            "'speechbrain_nes2net.pretrained.onnx_export'))))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
