"""One to three optimiser steps of our training loop against the official training loops.

``tests/data/official_training/`` holds, per release (CtrSVDD, ASVspoof 2019 LA,
ASVspoof 5), what the official training code did on a tiny configuration in
float64: the weights before, the batches (SSL features or hidden states), the
loss and learning rate of each step and the weights after one and after three
optimiser steps (how they were recorded: ``tests/data/README.md``).

Our side runs the recipe's own code path: the recipe YAML (its loss, its
``backend_opt_class``, ``lr_scheduler`` and ``lr_schedule_interval``) loaded
with a tiny SSL model, our ``AntiSpoofBrain.fit`` (``init_optimizers``,
``fit_batch``, the scheduler stepping), on the aggregator and back-end loaded
with the official weights. Only the SSL model is replaced, by a stand-in that
returns the recorded features, since the fixtures start after it.

The batches reach the Brain in two ways: as items built here (``direct``), and
through the recipe's data path (``manifest``): each utterance written as a
float WAV file, a manifest whose ``label`` column says ``bonafide`` or
``spoof``, the training dataset of ``train_valid_datasets`` (audio loading,
the training crop, the label encoding) and SpeechBrain's padded batches. A
flipped label encoding then changes the losses, and a crop that loses, moves
or alters samples is refused by the stand-in, which knows each utterance's
samples.
"""

from pathlib import Path

import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch
from torch.utils.data import DataLoader, Sampler

from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.manifest import read_manifest, write_manifest
from speechbrain_nes2net.official.backend import (
    aggregator_from_official,
    backend_from_official,
)
from speechbrain_nes2net.training.brain import AntiSpoofBrain
from speechbrain_nes2net.training.recipe import train_valid_datasets

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "official_training"
#: fixture -> the recipe YAML that reproduces that release's training loop
RECIPES = {
    "ctrsvdd_nes2net_x.pt": "nes2net_x_ctrsvdd.yaml",
    "asvspoof2019_nes2net_x.pt": "nes2net_x_asvspoof2019.yaml",
    "asvspoof5_nes2net_x.pt": "nes2net_x_asvspoof5.yaml",
}
RTOL = 1e-6


def load_fixture(name):
    """A fixture with its packed state dicts unpacked (official key names)."""
    fixture = torch.load(FIXTURES / name, weights_only=True)
    layout = fixture["state_layout"]
    for key in ("state_before", "state_after_1", "state_after_3"):
        fixture[key] = unpack(layout, fixture[key])
    return fixture


def unpack(layout, flat):
    """The state dict that the fixture generator packed into one float64 vector."""
    state, offset = {}, 0
    for name, shape, dtype in zip(layout["names"], layout["shapes"], layout["dtypes"]):
        size = int(torch.Size(shape).numel())
        state[name] = flat[offset : offset + size].reshape(shape).to(getattr(torch, dtype))
        offset += size
    assert offset == flat.numel()
    return state


class RecordedStates(torch.nn.Module):
    """SSL stand-in: the "waveform" of each utterance is its recorded features, flattened.

    Audio files hold float32, so each waveform is looked up by its float32
    samples and replaced by the recorded float64 states; a waveform that is
    not exactly one of them (cropped, shifted, scaled) is an error. Returns
    (layers, batch, frames, dim) hidden states like our SSL front-end.
    """

    def __init__(self, recorded):
        super().__init__()
        self.recorded = {self.key(states): states for states in recorded}

    @staticmethod
    def key(samples):
        """The float32 bytes of a flattened utterance."""
        return samples.reshape(-1).to(torch.float32).numpy().tobytes()

    def forward(self, wavs, lengths=None):
        """The recorded (layers, batch, frames, dim) states of the batch's waveforms."""
        states = []
        for wav in wavs:
            found = self.recorded.get(self.key(wav))
            assert found is not None, (
                f"a waveform of {wav.numel()} samples is none of the recorded utterances "
                f"({next(iter(self.recorded.values())).numel()} samples each): the data path "
                "cropped, moved or changed its samples"
            )
            states.append(found)
        return torch.stack(states, dim=1)


class StepBatches(Sampler):
    """Batch ``k`` of the fixture at the ``k``-th optimiser step, ``per_epoch`` batches an epoch."""

    def __init__(self, batches, batch_size, per_epoch):
        self.batches, self.batch_size, self.per_epoch = batches, batch_size, per_epoch
        self.epochs = 0

    def __iter__(self):
        start = self.epochs * self.per_epoch
        self.epochs += 1
        for step in range(start, start + self.per_epoch):
            step = min(step, self.batches - 1)  # read ahead past the last step, never trained
            yield list(range(step * self.batch_size, (step + 1) * self.batch_size))

    def __len__(self):
        return self.per_epoch


class RecordingBrain(AntiSpoofBrain):
    """Our Brain, noting the learning rate, loss and weights of every optimiser step."""

    def on_fit_start(self):
        """Starts the records."""
        super().on_fit_start()
        self.records = []

    def on_fit_batch_start(self, batch, should_step):
        """Notes the learning rate the step will use, and what the batch carries."""
        wavs, lengths = batch.sig
        self.records.append({
            "lr": self.optimizers_dict["backend"].param_groups[0]["lr"],
            "ids": list(batch.id),
            "label_ids": batch.label_id.data[:, 0].tolist(),
            "samples": (lengths * wavs.shape[1]).round().int().tolist(),
        })  # fmt: skip

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps the schedulers as usual, then notes the loss and the weights."""
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        self.records[-1].update(
            loss=float(loss.detach()),
            backend={k: v.clone() for k, v in self.modules["backend"].state_dict().items()},
            aggregator={k: v.clone() for k, v in self.modules["aggregator"].state_dict().items()},
        )


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    """The tiny SSL model the recipe YAMLs are loaded with (the stand-in replaces it)."""
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny_wavlm")


def official_modules(fixture, key):
    """The official weights ``fixture[key]`` in our back-end and aggregator, in float64.

    Built with float64 as the default dtype: loading float64 weights into a
    float32 module first would round them (by more than a step of 1e-6).
    """
    state, config = fixture[key], dict(fixture["config"])
    aggregator_config = {
        name: config.pop(name) for name in ("agg", "n_layers", "dim") if name in config
    }
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        backend = backend_from_official(fixture["model_name"], config, state)
        aggregator = None
        if "aggregator_name" in fixture:
            name = fixture["aggregator_name"]
            aggregator = aggregator_from_official(name, aggregator_config, state)
    finally:
        torch.set_default_dtype(default)
    return backend, aggregator


#: Samples after the recorded ones in the files of a recipe that trains on each
#: file's first ``train_samples`` (ASVspoof 2019): reading any of them shows.
TAIL = 320


def through_the_recipe_data_path(examples, hparams, folder):
    """The items as the recipe's training dataset gives them, from audio files and a manifest.

    Each item's signal is written as a float WAV file (with :data:`TAIL` more
    samples when the recipe crops from the start), its label as the manifest's
    text label (the fixtures' labels: 1 = bona fide).
    """
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for item in examples:
        sig = item["sig"]
        if not hparams["train_random_crop"]:
            sig = torch.cat([sig, torch.full((TAIL,), 0.5, dtype=sig.dtype)])
        path = folder / "audio" / f"{item['id']}.wav"
        sf.write(path, sig.numpy(), hparams["sample_rate"], subtype="FLOAT")
        bonafide = int(item["label_id"]) == 1
        rows.append({
            "ID": item["id"], "duration": len(sig) / hparams["sample_rate"], "wav": str(path),
            "label": "bonafide" if bonafide else "spoof", "attack": "-" if bonafide else "A01",
        })  # fmt: skip
    write_manifest(rows, folder / "manifest.csv")
    manifests = {hparams[key]: str(folder / "manifest.csv") for key in ("train_data", "valid_data")}
    train, _ = train_valid_datasets(hparams, manifests)
    return train


def train_like_the_release(fixture, yaml_name, folder, ssl_source, feed="direct"):
    """Runs our recipe's training on the fixture's batches; returns the step records.

    ``feed``: ``direct`` (items built here) or ``manifest`` (through the
    recipe's data path, :func:`through_the_recipe_data_path`).
    """
    layers = fixture["config"].get("n_layers", 3)
    frames, dim = fixture["batches"][0]["input"].shape[-2:]
    overrides = {
        "data_folder": str(folder / "unused"),
        "output_folder": str(folder / "run"),
        "ssl_source": ssl_source,
        "ssl_dim": fixture["config"]["input_channel"],
        "ssl_layers": layers,
        "num_workers": 0,
        # The data path: no augmentation, crops of exactly the recorded samples.
        "rawboost_algo": 0,
        "train_samples": layers * frames * dim,
    }
    if "epochs" in fixture:  # ASVspoof 5: the whole-run cosine needs the run's length
        overrides["number_of_epochs"] = fixture["epochs"]
    with open(ROOT / "hparams" / yaml_name, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    backend, aggregator = official_modules(fixture, "state_before")
    hparams["backend"].double().load_state_dict(backend.state_dict())
    if aggregator is not None:
        hparams["aggregator"].double().load_state_dict(aggregator.state_dict())

    examples = []
    for step, batch in enumerate(fixture["batches"]):
        states = batch["input"]
        if states.dim() == 3:  # (batch, frames, dim) features: the last of identical layers
            states = states.unsqueeze(0).expand(layers, -1, -1, -1)
        for i, label in enumerate(batch["labels"].tolist()):
            examples.append({
                "id": f"step{step}_utt{i}",
                "sig": states[:, i].reshape(-1).clone(),
                "label_id": torch.tensor([label]),
                "audio_error": "",
            })  # fmt: skip
    modules = {
        "ssl": RecordedStates([item["sig"].view(layers, frames, dim) for item in examples]),
        "aggregator": hparams["aggregator"],
        "backend": hparams["backend"],
    }
    batch_size = len(fixture["batches"][0]["labels"])
    sampler = StepBatches(len(fixture["batches"]), batch_size, fixture["steps_per_epoch"])
    if feed == "manifest":
        examples = through_the_recipe_data_path(examples, hparams, folder)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=PaddedBatch)

    brain = RecordingBrain(
        modules=modules,
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True, "optimizer_step_limit": 3},
        checkpointer=None,
    )
    brain.fit(hparams["epoch_counter"], loader)
    return brain.records


def assert_same_step(ours, official, before, lr, what):
    """Weights within RTOL, and the step itself (after - before) within RTOL of the official one.

    Adam moves an element with a real gradient by about ``lr``; an element
    whose gradient is rounding noise (e.g. 1e-18: an analytically zero
    gradient) moves by far less, in a direction that noise decides. The
    step's tolerance is therefore RTOL of the official step plus RTOL of a
    full step of ``lr`` per element.
    """
    assert ours.keys() == official.keys(), what
    for key in official:
        if not official[key].is_floating_point():  # num_batches_tracked
            assert torch.equal(ours[key], official[key]), f"{what} {key}"
            continue
        torch.testing.assert_close(
            ours[key], official[key], rtol=RTOL, atol=1e-12, msg=f"{what} {key}"
        )
        step, expected = ours[key] - before[key], official[key] - before[key]
        error = float((step - expected).norm())
        full_step = lr * expected.numel() ** 0.5
        assert error <= RTOL * (float(expected.norm()) + full_step), (
            f"{what} {key}: update off by {error:.3g} "
            f"(official update norm {float(expected.norm()):.3g})"
        )


@pytest.mark.parametrize("feed", ["direct", "manifest"])
@pytest.mark.parametrize("fixture_name", sorted(RECIPES))
def test_our_training_steps_equal_the_official_loop(fixture_name, feed, tmp_path, tiny_wavlm):
    fixture = load_fixture(fixture_name)
    records = train_like_the_release(fixture, RECIPES[fixture_name], tmp_path, tiny_wavlm, feed)
    assert len(records) == 3
    if feed == "manifest":
        # The batch of each step as the Brain got it, against the manifest rows:
        # the fixture's utterances in order, labels encoded 1 = bona fide (the
        # official code's and the fixtures' convention, written out here, not
        # read from the package), each utterance with all its recorded samples.
        rows = read_manifest(tmp_path / "manifest.csv").set_index("ID")
        frames, dim = fixture["batches"][0]["input"].shape[-2:]
        samples = fixture["config"].get("n_layers", 3) * frames * dim
        for step, record in enumerate(records):
            size = len(fixture["batches"][step]["labels"])
            assert record["ids"] == [f"step{step}_utt{i}" for i in range(size)]
            official = fixture["batches"][step]["labels"].tolist()
            assert record["label_ids"] == official, (step, record["label_ids"], official)
            assert [int(rows.loc[utt, "label"] == "bonafide") for utt in record["ids"]] == official
            assert record["samples"] == [samples] * size
    lrs = torch.tensor([r["lr"] for r in records], dtype=torch.float64)
    torch.testing.assert_close(lrs, fixture["lrs"], rtol=1e-9, atol=0)
    losses = torch.tensor([r["loss"] for r in records], dtype=torch.float64)
    torch.testing.assert_close(losses, fixture["losses"], rtol=RTOL, atol=0)
    before_backend, before_aggregator = official_modules(fixture, "state_before")
    lr = float(fixture["lrs"].max())
    for step in (1, 3):
        backend, aggregator = official_modules(fixture, f"state_after_{step}")
        ours = records[step - 1]
        assert_same_step(
            ours["backend"], backend.state_dict(), before_backend.state_dict(), lr,
            f"back-end after step {step}",
        )  # fmt: skip
        if aggregator is not None:
            assert_same_step(
                ours["aggregator"], aggregator.state_dict(), before_aggregator.state_dict(), lr,
                f"aggregator after step {step}",
            )  # fmt: skip


def test_the_fixtures_record_real_updates():
    # Each fixture moves every parameter (else a missing step would pass), and
    # the learning rates follow each release's schedule.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    for name in RECIPES:
        fixture = load_fixture(name)
        before, after = fixture["state_before"], fixture["state_after_3"]
        parameters = [key for key in before if not key.endswith(buffers)]
        assert len(parameters) > 100, name
        assert not [key for key in parameters if torch.equal(before[key], after[key])], name
    lrs = {name: load_fixture(name)["lrs"].tolist() for name in RECIPES}
    assert lrs["asvspoof2019_nes2net_x.pt"] == [2.5e-7] * 3  # constant
    assert lrs["ctrsvdd_nes2net_x.pt"][0] == 1e-6 > lrs["ctrsvdd_nes2net_x.pt"][1]  # per epoch
    assert lrs["asvspoof5_nes2net_x.pt"][2] == pytest.approx(5.5e-7)  # half-way through 4 steps
