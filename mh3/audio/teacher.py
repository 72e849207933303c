"""A trained audio teacher (AST) on disk: features in, export, load back, and soft-label logits.

`<workdir>/params/` of the teacher_audio stage holds:
  params.msgpack   the Flax params (flax.serialization bytes);
  model.json       the ASTConfig fields, compute dtype, class names, max_length, mel bins, the
                   normalisation statistics and the feature cache the stage used;
  stats.json       the normalisation statistics alone (mh3.audio.features.save_stats).

`predict(folder, dataset, wav_dir, batch_size=...)` gives the teacher's logits for every example
of a dataset in global order, which is what the student stage turns into soft labels.

Also here: the batches the stage trains on (normalised features with `label`, `mask`, `index`)
and `make_tiny_random`, the small randomly initialised AST checkpoint of the offline demo.
"""

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization

from mh3 import files
from mh3.audio import features as feats
from mh3.audio.tts import MANIFEST, text_hash, wav_name
from mh3.data import batching
from mh3.errors import UserError
from mh3.models.ast import ASTClassifier, ASTConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TINY_RANDOM = "tiny-random"


# ---- inputs --------------------------------------------------------------------------------


def wav_paths(wav_dir: str, examples: Sequence) -> list[str]:
    """`<wav_dir>/Sample_{index}.wav` for each example."""
    return [os.path.join(wav_dir, wav_name(e.index)) for e in examples]


def missing_wavs(wav_dir: str, examples: Sequence) -> list[str]:
    """The wav files of `examples` that do not exist (readability is checked when loading)."""
    return [p for p in wav_paths(wav_dir, examples) if not os.path.exists(p)]


def check_manifest(wav_dir: str, examples: Sequence) -> None:
    """Checks wavs against the tts manifest, when there is one, by the hash of the spoken text.

    Sample_{i}.wav is only meaningful for the dataset and data settings that numbered the
    examples (smoke subsets renumber them), so a folder of another run must not be reused.
    Folders without a manifest (wavs made elsewhere) are taken as they are.

    Raises:
      UserError: a wav was spoken from another text than its example's.
    """
    path = os.path.join(wav_dir, MANIFEST)
    if not os.path.exists(path):
        return
    spoken = {int(e["id"]): e.get("text_hash") for e in files.read_json(path)}
    for e in examples:
        if e.index in spoken and spoken[e.index] != text_hash(e.text):
            raise UserError(
                f"{os.path.join(wav_dir, wav_name(e.index))} was spoken from another text than "
                f"example {e.index} ({e.id!r}) per {path}; these wavs belong to other data "
                "settings: use the tts stage with this config's data block (leave "
                "config.audio.wav_dir empty)"
            )


def load_features(
    examples: Sequence,
    wav_dir: str,
    cache_dir: str | None,
    *,
    max_length: int,
    num_mel_bins: int,
) -> np.ndarray:
    """Un-normalised fbank features (N, max_length, num_mel_bins) of `examples`, cached per file.

    Raises:
      UserError: a wav is missing (naming the first one and how to make it), or the tts
        manifest says a wav was spoken from another text.
    """
    missing = missing_wavs(wav_dir, examples)
    if missing:
        raise UserError(
            f"{len(missing)} audio file(s) missing, e.g. {missing[0]}; run the tts stage for this "
            "dataset or point config.audio.wav_dir at a folder with Sample_{i}.wav files"
        )
    check_manifest(wav_dir, examples)
    return feats.features_for(
        wav_paths(wav_dir, examples), cache_dir, num_mel_bins=num_mel_bins, max_length=max_length
    )


def batches(
    features: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    *,
    rows: np.ndarray | None = None,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """Batches of (already normalised) features, shuffled and sharded like the text batches.

    `features`, `labels` and `indices` are arrays over all examples; `rows` picks the ones of
    this split (None: all), so a split is never copied out of the feature array.

    The plan (which rows, in which order, on which process, padding rows at the end) is the
    one of mh3.data.batching, so audio and text epochs follow the same rules; all examples have
    the same length, so there is no bucketing.

    Yields:
      dicts with `input_values` (B, T, mel) float32, `label`, `mask` (1 = real row) and
      `index` (global example index, -1 on padding rows), B = batch_size // process_count.
    """
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    plan, _ = batching.plan(
        np.ones(len(rows), np.int64), batch_size, train=train, seed=seed, epoch=epoch,
        process_count=process_count, buckets=None, max_len=1,
    )  # fmt: skip
    for k in range(len(plan)):
        pos = plan[k, process_index]
        real = pos >= 0
        safe = rows[np.where(real, pos, 0)]
        yield {
            "input_values": np.where(real[:, None, None], features[safe], 0.0).astype(np.float32),
            "label": np.where(real, labels[safe], 0).astype(np.int32),
            "mask": real.astype(np.int32),
            "index": np.where(real, indices[safe], -1).astype(np.int32),
        }


# ---- the offline demo checkpoint -----------------------------------------------------------


def make_tiny_random(
    folder: str,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    max_length: int,
    num_mel_bins: int,
    seed: int,
) -> str:
    """Writes a small RANDOMLY INITIALISED HF AST checkpoint to `folder` (once) and returns it.

    This is not a pretrained model: it stands in for `MIT/ast-finetuned-audioset-10-10-0.4593`
    where no model hub can be reached, so the pipeline runs offline end to end. It is an HF
    folder (config.json + model.safetensors) so it goes through the same `from_hf` path,
    position-table adaptation included.
    """
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    import torch  # only this demo path needs torch
    import transformers as hf

    torch.manual_seed(seed)
    config = hf.ASTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_length=max_length,
        num_mel_bins=num_mel_bins,
    )
    model = hf.ASTForAudioClassification(config).eval()
    with torch.no_grad():
        # HF starts the CLS/distillation tokens and the position table at zero; random values
        # make the demo exercise what a pretrained table goes through (resample or zeros).
        for name, p in model.named_parameters():
            if "token" in name or "position" in name:
                p.normal_(0.0, config.initializer_range)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-ast-", dir=parent)
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, folder)  # a half-written folder is never seen under the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("wrote a randomly initialised tiny AST (demo only, not pretrained) to %s", folder)
    return folder


# ---- export and load -----------------------------------------------------------------------


def save_audio_teacher(
    folder: str,
    model: ASTClassifier,
    params,
    *,
    classes: Sequence[str],
    stats: dict,
    feature_cache: str | None = None,
) -> None:
    """Writes params, settings and normalisation statistics of an audio teacher to `folder`.

    Args:
      folder: the export folder (the stage uses `<workdir>/params`).
      model: the trained ASTClassifier (its config holds max_length and num_mel_bins).
      params: its parameters.
      classes: class names in label order.
      stats: {'mean', 'std', ...} the features were normalised with.
      feature_cache: the fbank cache folder used, reused by `predict` when it still exists.
    """
    os.makedirs(folder, exist_ok=True)
    data = serialization.to_bytes(jax.device_get(params))
    files.atomic_write(os.path.join(folder, "params.msgpack"), lambda t: open(t, "wb").write(data))
    feats.save_stats(os.path.join(folder, "stats.json"), stats)
    meta = {
        "kind": "audio_teacher",
        "config": dataclasses.asdict(model.config),
        "dtype": jnp.dtype(model.dtype).name,
        "classes": list(classes),
        "max_length": model.config.max_length,
        "num_mel_bins": model.config.num_mel_bins,
        "stats": {k: stats[k] for k in ("mean", "std", "count") if k in stats},
        "feature_cache": os.path.abspath(feature_cache) if feature_cache else None,
    }
    files.write_json(os.path.join(folder, "model.json"), meta)


def load_audio_teacher(folder: str, *, dtype=None):
    """Loads what `save_audio_teacher` wrote.

    Args:
      folder: the `params/` folder of a finished teacher_audio workdir.
      dtype: compute dtype override (None: the one it was trained with).

    Returns:
      (model, params, meta); meta holds `classes`, `max_length`, `num_mel_bins`, `stats`.

    Raises:
      UserError: the folder is not a finished audio-teacher export.
    """
    path = os.path.join(folder, "model.json")
    if not os.path.exists(path):
        raise UserError(
            f"{folder}: no model.json; run the teacher_audio stage first (it writes params/)"
        )
    meta = files.read_json(path)
    if meta.get("kind") != "audio_teacher":
        raise UserError(f"{folder}: model.json is not an audio-teacher export ({meta.get('kind')})")
    model = ASTClassifier(ASTConfig(**meta["config"]), dtype=dtype or DTYPES[meta["dtype"]])
    x = jnp.zeros((1, model.config.max_length, model.config.num_mel_bins), jnp.float32)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {"input_values": x}))
    with open(os.path.join(folder, "params.msgpack"), "rb") as f:
        params = serialization.msgpack_restore(f.read())
    if jax.tree.map(lambda a: a.shape, params) != jax.tree.map(
        lambda a: a.shape, template["params"]
    ):
        raise UserError(f"{folder}: params.msgpack does not match model.json; re-run the stage")
    meta["stats"] = feats.load_stats(os.path.join(folder, "stats.json"))
    return model, params, meta


def forward_fn(model: ASTClassifier):
    """A jitted `(params, input_values) -> float32 logits` in eval mode (no dropout)."""

    @jax.jit
    def forward(params, x):
        logits, _ = model.apply({"params": params}, {"input_values": x}, train=False)
        return logits.astype(jnp.float32)

    return forward


def predict(
    folder: str, dataset, wav_dir: str, *, batch_size: int, cache_dir: str | None = None
) -> np.ndarray:
    """The teacher's logits for every example of `dataset`, row i = example with index i.

    Args:
      folder: an export written by `save_audio_teacher`.
      dataset: a mh3.data.Dataset (all splits; global order).
      wav_dir: the folder with `Sample_{i}.wav` for every example.
      batch_size: examples per forward pass (the last batch is padded, so one shape compiles).
      cache_dir: fbank cache folder; None reuses the teacher's own cache when it still exists.

    Returns:
      float32 array (N, C), N = len(dataset.examples), C = number of classes.

    Raises:
      UserError: the export is missing, the classes differ, or a wav is missing.
    """
    model, params, meta = load_audio_teacher(folder)
    if list(dataset.classes) != list(meta["classes"]):
        raise UserError(
            f"{folder}: the teacher was trained on classes {meta['classes']}, the dataset has "
            f"{list(dataset.classes)}; train the audio teacher on this dataset"
        )
    if cache_dir is None and meta.get("feature_cache") and os.path.isdir(meta["feature_cache"]):
        cache_dir = meta["feature_cache"]
    examples = sorted(dataset.examples, key=lambda e: e.index)
    x = load_features(
        examples, wav_dir, cache_dir,
        max_length=meta["max_length"], num_mel_bins=meta["num_mel_bins"],
    )  # fmt: skip
    x = feats.normalize(x, meta["stats"])
    forward = forward_fn(model)
    out = np.zeros((len(examples), len(meta["classes"])), np.float32)
    for start in range(0, len(examples), batch_size):
        chunk = x[start : start + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate(
                [chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)]
            )
        out[start : start + n] = np.asarray(forward(params, chunk))[:n]
    rows = np.array([e.index for e in examples])
    result = np.zeros_like(out)
    result[rows] = out
    return result
