"""The files an export folder is written from: ``hyperparams.yaml`` and ``custom_interface.py``.

:func:`speechbrain_nes2net.pretrained.export.write_export` fills in the
``{placeholders}`` of :data:`HYPERPARAMS` (values as JSON, which YAML reads
back unchanged), with :data:`SSL_FROM_HUB` (a frozen hub model) or
:data:`SSL_STORED` (weights in ``ssl.ckpt``), and :data:`LOCALIZATION` for
localisation models.

Authors
 * speechbrain-nes2net contributors
"""

HYPERPARAMS = """\
# ############################################################################
# {title}
# Exported by speechbrain_nes2net.pretrained.export on {date}; see README.md.
# Loads with speechbrain.inference.classifiers.EncoderClassifier (label
# 'bonafide' / 'spoof') and speechbrain_nes2net.pretrained.interface.AntiSpoofModel.
# ############################################################################
export_format: {export_format}
# Input: any audio; read as {sample_rate} Hz mono (channels averaged, resampled).
sample_rate: {sample_rate}
eval_samples: {eval_samples}   # first N samples, repeat-padded (null: all)
eval_min_samples: {eval_min_samples}   # shorter full utterances are repeat-padded to this
eval_window_seconds: {eval_window_seconds}   # longer: mean logits of windows
window_seconds: {window_seconds}   # AntiSpoofModel.score_windows defaults
window_hop_seconds: {window_hop_seconds}

# Scores: higher = more bona fide; the raw score is the back-end's bona fide
# logit. A calibration maps it to a log-likelihood ratio: scale * score + offset.
calibration: {calibration}
# Decisions (EncoderClassifier labels, AntiSpoofModel, nes2net-score --labels):
# bona fide when the raw score >= threshold (README.md says how its source fitted it).
decision: {decision}

# Model --------------------------------------------------------------------
{ssl}

aggregator: !apply:speechbrain_nes2net.lobes.aggregation.build_aggregator
    name: {aggregation}
    num_layers: {num_layers}
    dim: {dim}

backend: !new:{backend_class}
{backend_arguments}

# EncoderClassifier slots ---------------------------------------------------
compute_features: !new:speechbrain_nes2net.pretrained.modules.MonoWaveforms
mean_var_norm: !new:speechbrain_nes2net.pretrained.modules.PassThrough
embedding_model: !new:speechbrain_nes2net.pretrained.modules.AntiSpoofEncoder
    ssl: !ref <ssl>
    aggregator: !ref <aggregator>
    backend: !ref <backend>
    num_samples: !ref <eval_samples>
    min_samples: !ref <eval_min_samples>
    window_seconds: !ref <eval_window_seconds>
    sample_rate: !ref <sample_rate>
classifier: !new:speechbrain_nes2net.pretrained.modules.AntiSpoofHead
    backend: !ref <backend>
    decision: !ref <decision>

label_encoder: !new:speechbrain_nes2net.pretrained.modules.LabelEncoder
audio_normalizer: !new:speechbrain_nes2net.pretrained.modules.AudioNormalizer
    sample_rate: !ref <sample_rate>

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

# Every file is found as <source>/<name>.ckpt (no paths: they would be
# resolved against the working directory).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
{loadables}
{localization}"""

#: A frozen SSL model, downloaded from the hub into the Hugging Face cache on first use.
SSL_FROM_HUB = """\
ssl: !new:speechbrain_nes2net.lobes.ssl.SSLFrontend
    source: {hub_id}
    save_path: !apply:speechbrain_nes2net.lobes.ssl.hf_cache_dir []
    freeze: true
    normalize: {normalize}"""

#: An SSL model stored in the folder (``ssl.ckpt``), rebuilt from its configuration.
SSL_STORED = """\
ssl: !new:speechbrain_nes2net.lobes.ssl.SSLFrontendFromConfig
    model_type: {model_type}
    normalize: {normalize}
    freeze: true
    config:
{config}"""

LOCALIZATION = """
# Localisation (AntiSpoofModel.localize, nes2net-score --frames): frame scores
# pooled to segment_shift s (pooling), a segment bona fide when its raw score >=
# decision.threshold (fitted on development segments).
localization: {localization}
"""

CUSTOM_INTERFACE = '''"""Interface for speechbrain.inference.interfaces.foreign_class.

The class lives in the installed package (pip install speechbrain-nes2net):
    foreign_class(source, pymodule_file="custom_interface.py", classname="AntiSpoofModel")
"""

from speechbrain_nes2net.pretrained.interface import AntiSpoofModel  # noqa: F401
'''

#: The model card, ``README.md`` (front matter for model hubs, then the card).
CARD = """\
---
library_name: speechbrain
license: {licence_id}
pipeline_tag: audio-classification
tags:
- speechbrain
- anti-spoofing
- audio-deepfake-detection
- nes2net
---

# {title}

{description}

## Usage

With SpeechBrain alone (`pip install speechbrain speechbrain-nes2net`; the model
classes come from the installed package):

```python
from speechbrain.inference.classifiers import EncoderClassifier
clf = EncoderClassifier.from_hparams(source="<folder or hub id>", savedir="pretrained")
out_prob, score, index, label = clf.classify_file("x.flac")  # label: bonafide | spoof
bonafide_log_odds = out_prob[..., 1] - out_prob[..., 0]
```

Bona fide scores (calibrated when the folder carries a calibration), long files in
windows, many files at once:

```python
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
model = AntiSpoofModel.from_hparams(source="<folder or hub id>", savedir="pretrained")
model.score_file("x.flac")           # float, higher = more bona fide
model.score_windows("long.wav")      # per-window scores and their mean
```

Command line: `nes2net-score --model <this folder> --output scores.txt audio_dir/`.

## Model

- SSL front-end: {ssl_source} (`{model_type}`, {num_layers} layers, {hidden_size} dims),
  {stored}; input {ssl_input}.
- Layer aggregation: `build_aggregator` {aggregation}.
- Back-end: `{backend_class}` {backend_arguments}, {n_params:,} parameters.
- Input: {sample_rate} Hz mono (other rates are resampled, channels averaged); each file is
  scored on {evaluation}.

## Score convention

Higher = more bona fide. The raw score is the back-end's bona fide logit
(one-logit models: the bona fide log-odds; two-logit models: logit index 1, the
official ASVspoof scoring). `EncoderClassifier` returns log-posteriors
`[log P(spoof), log P(bonafide)]` and the label of the larger one.

{decisions}
{sections}## Licence

The weights derive from {licence}. The speechbrain-nes2net code is released under
the Apache 2.0 licence.

## Files

`hyperparams.yaml` (modules and settings), {ssl_file}`aggregator.ckpt`, `backend.ckpt`,
`label_encoder.ckpt` (spoof = 0, bonafide = 1), `custom_interface.py` (for
`foreign_class`), this card.
"""
