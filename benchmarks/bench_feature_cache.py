"""Frozen-SSL training: epoch time with and without the feature cache.

Measured with the tiny demo WavLM (an epoch of the back-end trained on cached
states vs recomputing the frozen SSL model every epoch), then, from measured
per-utterance costs on this CPU, the ratio to expect with WavLM-Large
(random weights, nothing downloaded): (SSL forward + back-end step) /
(cache read + back-end step) for 4 s utterances.

Run: ``python benchmarks/bench_feature_cache.py`` (``--quick`` for a smoke run).
"""

import argparse
import tempfile
import time

import torch
import transformers

from speechbrain_nes2net.lobes.aggregation import SEA
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.lobes.ssl import SSLFrontend, make_tiny_ssl_model
from speechbrain_nes2net.training.feature_cache import FeatureCache
from speechbrain_nes2net.training.losses import BinaryFocalLoss


def _epoch(frontend, aggregator, backend, batches, cache=None):
    """One training epoch of the back-end on a frozen SSL model; returns seconds."""
    optimizer = torch.optim.Adam(list(aggregator.parameters()) + list(backend.parameters()))
    loss_fn = BinaryFocalLoss()
    start = time.perf_counter()
    for wavs, lengths, labels in batches:
        with torch.no_grad():
            if cache is None:
                states = frontend(wavs, lengths)
            else:
                states, lengths = cache.states(wavs, lengths, frontend)
        loss = loss_fn(backend(aggregator(states, lengths), lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def tiny_epochs(utterances=64, seconds=2.0, batch_size=16):
    """Epoch seconds: uncached, first cached (writes), second cached (reads)."""
    folder = tempfile.mkdtemp()
    frontend = SSLFrontend(make_tiny_ssl_model(f"{folder}/tiny")).eval()
    aggregator, backend = SEA(3), Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4)
    gen = torch.Generator().manual_seed(0)
    samples = int(seconds * 16000)
    batches = [
        (
            torch.randn(batch_size, samples, generator=gen),
            torch.ones(batch_size),
            torch.randint(0, 2, (batch_size,), generator=gen),
        )
        for _ in range(utterances // batch_size)
    ]
    cache = FeatureCache(f"{folder}/cache", "bench", dtype="float16")
    uncached = _epoch(frontend, aggregator, backend, batches)
    writing = _epoch(frontend, aggregator, backend, batches, cache)
    reading = _epoch(frontend, aggregator, backend, batches, cache)
    return {"uncached_s": uncached, "cache_write_s": writing, "cache_read_s": reading}


def large_costs(repeats=2):
    """Per 4 s utterance on this CPU: WavLM-Large forward, cache read, back-end step."""
    config = transformers.WavLMConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
        layerdrop=0.0,
    )
    model = transformers.WavLMModel(config).eval()
    wav = torch.randn(1, 64000)
    with torch.no_grad():
        model(wav)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(wav, output_hidden_states=True)
        ssl = (time.perf_counter() - start) / repeats
    states = torch.stack(out.hidden_states)  # 25 x 1 x 199 x 1024
    folder = tempfile.mkdtemp()
    cache = FeatureCache(folder, "large", dtype="float16")
    cache.states(wav, torch.ones(1), lambda w, l: states)
    start = time.perf_counter()
    for _ in range(repeats):
        cache.states(wav, torch.ones(1), lambda w, l: states)
    read = (time.perf_counter() - start) / repeats
    aggregator, backend = SEA(25), Nes2NetX()
    optimizer = torch.optim.Adam(list(aggregator.parameters()) + list(backend.parameters()))
    start = time.perf_counter()
    for _ in range(repeats):
        loss = backend(aggregator(states)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step = (time.perf_counter() - start) / repeats
    return {"wavlm_large_forward_s": ssl, "cache_read_s": read, "backend_step_s": step,
            "entry_mb": states.numel() * 2 / 2**20}


def run(quick=False):
    """Runs both measurements; returns the numbers and the two ratios."""
    tiny = tiny_epochs(utterances=16 if quick else 64)
    result = {**{f"tiny_{k}": v for k, v in tiny.items()}}
    result["tiny_cache_speedup"] = tiny["uncached_s"] / tiny["cache_read_s"]
    if not quick:
        large = large_costs()
        result.update({f"large_{k}": v for k, v in large.items()})
        result["expected_wavlm_large_speedup"] = (
            large["wavlm_large_forward_s"] + large["backend_step_s"]
        ) / (large["cache_read_s"] + large["backend_step_s"])
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, no WavLM-Large")
    for key, value in run(parser.parse_args().quick).items():
        print(f"{key}: {value:.4g}")
