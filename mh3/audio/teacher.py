"""The audio teacher (AST): the task its stage trains, its saved model, and reading it back.

Inputs are the spoken posts, `<wav_dir>/Sample_{index}.wav`, as normalised fbank features
(`normalised_features`); `task` turns them and a model from `mh3.weights.from_hf` into the
`mh3.train.recipe.Task` the teacher_audio stage trains.

The saved model (`<workdir>/model/`, DESIGN "CONTRACT: saved models") is an HF
`ASTForAudioClassification` folder (`mh3.weights.save_hf`: config.json with id2label,
model.safetensors) plus `mh3.json` of kind `audio`, whose `audio` block holds everything the
training-time preprocessing needs: sample_rate, num_mel_bins, max_length (frames), the fbank
settings (`FBANK`), and the normalisation `mean` and `std` (`(x - mean) / (2 * std)`, as in
mh3.audio.features.normalize) with the splits they came from. `feature_cache` records the
per-file fbank cache the stage filled; `logits_examples` reads the dataset-level cache beside
the wavs first, then that one while it exists.

`mh3.load(folder)` gives an `AudioPredictor` for this kind:
`predict`/`logits` of waveforms or wav files, and `logits_examples`, a dataset's logits in
global order, which the student turns into soft labels.
"""

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from absl import logging

from mh3 import files, saved_model, weights
from mh3.audio import features as feats
from mh3.audio.tts import MANIFEST, text_hash, wav_name
from mh3.data import SPLITS, batching, check_trainable
from mh3.errors import UserError
from mh3.train import parallel, recipe

# What mh3.audio.features.fbank computes (its module docstring), recorded in mh3.json so a
# saved model says how its inputs were made; a model recorded with other settings is refused.
FBANK = dict(
    frame_length=feats.FRAME_LENGTH, hop_length=feats.HOP_LENGTH, fft_length=feats.FFT_LENGTH,
    window="hann_symmetric", center=False, remove_dc_offset=True, preemphasis=feats.PREEMPHASIS,
    dither=0.0, power=2.0, mel_scale="kaldi", low_freq=20, high_freq=feats.SAMPLE_RATE // 2,
    log="natural", mel_floor=feats.MEL_FLOOR, padding="zeros after the last frame, or cut",
)  # fmt: skip
NORMALIZATION = "(x - mean) / (2 * std)"
# Examples per device and forward pass when a predictor is not told a batch size.
PER_DEVICE_BATCH = 8


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


def check_wavs(examples: Sequence, wav_dir: str) -> list[str]:
    """The wav paths of `examples`, after checking that they exist and belong to them.

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
    return wav_paths(wav_dir, examples)


def load_features(
    examples: Sequence,
    wav_dir: str,
    cache_dir: str | None,
    *,
    max_length: int,
    num_mel_bins: int,
) -> np.ndarray:
    """Un-normalised fbank features (N, max_length, num_mel_bins) of `examples`.

    Cached per file in `cache_dir` and, for the whole set, in `wav_dir` itself
    (`fbank-<key>.npy`, mh3.audio.features): the wavs are shared by every teacher run, search
    trial and retrain that reads them, so their features are computed once for all of them.

    Raises:
      UserError: as `check_wavs`.
    """
    return feats.features_for(
        check_wavs(examples, wav_dir), cache_dir, num_mel_bins=num_mel_bins,
        max_length=max_length, shared_dir=wav_dir,
    )  # fmt: skip


def normalised_features(
    examples: Sequence,
    wav_dir: str,
    cache_dir: str | None,
    *,
    max_length: int,
    num_mel_bins: int,
    stats_splits: Sequence[str],
) -> tuple[np.ndarray, dict]:
    """Features of `examples` normalised with statistics of the `stats_splits` examples only.

    Returns:
      (features (N, max_length, num_mel_bins) in the order of `examples`, stats).

    Raises:
      UserError: as `check_wavs`.
    """
    x = load_features(
        examples, wav_dir, cache_dir, max_length=max_length, num_mel_bins=num_mel_bins
    )
    allowed = np.isin([e.split for e in examples], list(stats_splits))
    stats = feats.compute_stats(x[allowed])
    logging.info(
        "fbank stats over %s: mean %.4f std %.4f",
        "+".join(stats_splits), stats["mean"], stats["std"],
    )  # fmt: skip
    return feats.normalize(x, stats), stats


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
    group_batches: int = 50,
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
        process_count=process_count, buckets=None, max_len=1, group_batches=group_batches,
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


def task(
    model,
    params,
    features: np.ndarray,
    dataset,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    group_batches: int = 50,
    save=None,
) -> recipe.Task:
    """The recipe task of an audio teacher: classify `dataset`'s examples from their features.

    Args:
      model: an ASTClassifier (from `mh3.weights.from_hf`), params: its initial params.
      features: normalised features of `dataset.examples`, in that order.
      dataset: a mh3.data.Dataset (its splits, labels, ids and classes).
      batch_size: global training batch size; eval_batch_size: the held-out one.
      seed: the data-order seed.
      group_batches: `data.group_batches` (0: the notebooks' uniform shuffle, short batch last).
      save: `(folder, params)` -> writes the saved model (`save`, bound to its settings).
    """
    check_trainable(dataset)
    examples = dataset.examples
    labels = np.array([e.label for e in examples], np.int32)
    indices = np.array([e.index for e in examples], np.int32)
    split_of = np.array([e.split for e in examples])
    rows = {s: np.flatnonzero(split_of == s) for s in SPLITS}
    ids = [""] * len(examples)
    for e in examples:
        ids[e.index] = e.id
    proc = dict(process_index=parallel.process_index(), process_count=parallel.process_count())

    def split_batches(split: str, *, train: bool, epoch: int = 0) -> Iterator[dict]:
        size = batch_size if train else eval_batch_size
        return batches(features, labels, indices, size, rows=rows[split], train=train,
                       seed=seed, epoch=epoch, group_batches=group_batches, **proc)  # fmt: skip

    return recipe.Task(
        model=model,
        params=params,
        batches=split_batches,
        sizes={s: len(r) for s, r in rows.items()},
        classes=list(dataset.classes),
        ids=ids,
        title=dataset.name,
        save=save,
    )


# ---- the saved model -----------------------------------------------------------------------


def audio_settings(audio_config, stats: dict) -> dict:
    """The `audio` block of mh3.json: the preprocessing a saved model's inputs go through.

    Args:
      audio_config: the stage's `config.audio` (max_length, num_mel_bins, stats_splits).
      stats: the normalisation statistics (`feats.compute_stats`).
    """
    return {
        "sample_rate": feats.SAMPLE_RATE,
        "num_mel_bins": int(audio_config.num_mel_bins),
        "max_length": int(audio_config.max_length),
        "fbank": dict(FBANK),
        "normalization": NORMALIZATION,
        "mean": float(stats["mean"]),
        "std": float(stats["std"]),
        "count": int(stats["count"]),
        "stats_splits": list(audio_config.stats_splits),
    }


def save(
    folder: str,
    params,
    *,
    model,
    classes: Sequence[str],
    protocol: str,
    data_fingerprint: str,
    audio: dict,
    feature_cache: str | None = None,
) -> None:
    """Writes the saved model (module docstring): the HF folder first, then mh3.json, so a
    folder with mh3.json is complete.

    Args:
      folder: `<workdir>/model`.
      params: the trained params; model: their ASTClassifier.
      classes: class names in label order.
      protocol: the config's protocol.
      data_fingerprint: of the data it was trained on.
      audio: `audio_settings(...)`.
      feature_cache: the fbank cache folder the stage used (a hint for `logits_examples`).
    """
    weights.save_hf(folder, model, params, id2label=list(classes))
    saved_model.write_meta(
        folder,
        kind="audio",
        classes=classes,
        protocol=protocol,
        data_fingerprint=data_fingerprint,
        audio=audio,
        feature_cache=os.path.abspath(feature_cache) if feature_cache else None,
    )


def _eval_batches(items: Iterable[tuple[int, np.ndarray]], rows: int) -> Iterator[dict]:
    """Batches of `rows` rows from (index, features) pairs, the last one padded (mask 0,
    index -1), so every batch has the one shape that compiles."""
    items = iter(items)
    while group := list(itertools.islice(items, rows)):
        x = np.stack([f for _, f in group])
        pad = rows - len(group)
        yield {
            "input_values": np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]),
            "mask": (np.arange(rows) < len(group)).astype(np.int32),
            "index": np.array([i for i, _ in group] + [-1] * pad, np.int32),
        }


class AudioPredictor(saved_model.Predictor):
    """A saved audio teacher: logits and probabilities of waveforms or wav files.

    Attributes:
      model, params: the AST and its params, exactly as saved (head included).
      audio: the preprocessing settings of mh3.json.
      batch_size: examples per forward pass, rounded up to a multiple of the local devices
        (default PER_DEVICE_BATCH per device).
    """

    def __init__(self, folder: str, meta: dict, batch_size: int | None = None):
        super().__init__(folder, meta, batch_size or PER_DEVICE_BATCH * parallel.device_count())
        self.audio = meta["audio"]
        if self.audio["sample_rate"] != feats.SAMPLE_RATE or self.audio["fbank"] != FBANK:
            raise UserError(
                f"{folder}: the model was trained on fbank features made with other settings "
                f"({self.audio['sample_rate']} Hz, {self.audio['fbank']}) than this mh3 "
                "computes; use the mh3 version that trained it or retrain"
            )
        self.model, self.params = weights.from_hf(folder)
        config = self.model.config
        shape = (config.max_length, config.num_mel_bins, config.num_labels)
        if shape != (self.audio["max_length"], self.audio["num_mel_bins"], len(self.classes)):
            raise UserError(
                f"{folder}: config.json (max_length, num_mel_bins, labels) {shape} does not "
                "match mh3.json; the folder was changed after saving, retrain or re-save it"
            )
        self._set_model(self.model.apply, {"params": self.params}, ("input_values",))

    def _normalise(self, fbank: np.ndarray) -> np.ndarray:
        return feats.normalize(fbank, self.audio)

    def _fbank(self, item) -> np.ndarray:
        """Normalised features of one waveform (16 kHz) or audio file (any rate)."""
        if isinstance(item, (str, os.PathLike)):
            wave = feats.load_audio(os.fspath(item))  # mono, resampled to 16 kHz
        else:
            wave = np.asarray(item, np.float32)
            if wave.ndim != 1:
                raise ValueError(
                    f"a waveform must be 1-D (samples at 16 kHz), got shape {wave.shape}"
                )
        x = feats.fbank(
            wave, num_mel_bins=self.audio["num_mel_bins"], max_length=self.audio["max_length"]
        )
        return self._normalise(x)

    def logits(self, inputs: Sequence) -> np.ndarray:
        """float32 (N, C) logits, row i for input i.

        Args:
          inputs: a list of waveforms (1-D float arrays at 16 kHz) or audio file paths (any
            sample rate: read mono and resampled to 16 kHz, as the training pipeline does).
        """
        if isinstance(inputs, (str, os.PathLike)) or getattr(inputs, "ndim", 0) == 1:
            raise ValueError("pass a list of waveforms or paths (one input: a list of one)")
        inputs = list(inputs)
        items = ((i, self._fbank(x)) for i, x in enumerate(inputs))
        return self._run(_eval_batches(items, self.batch_size), len(inputs))

    def logits_examples(
        self, examples: Sequence, wav_dir: str, cache_dir: str | None = None
    ) -> np.ndarray:
        """float32 (N, C) logits of a dataset's examples, row i = the example with index i.

        Args:
          examples: all examples of a dataset (indices 0..N-1, in any order).
          wav_dir: the folder with `Sample_{index}.wav` for every example.
          cache_dir: fbank cache folder; None reuses the one recorded in mh3.json while it
            exists (else features are computed without caching).

        Raises:
          UserError: a wav is missing or belongs to other data (see `check_wavs`).
        """
        if sorted(e.index for e in examples) != list(range(len(examples))):
            raise ValueError("logits_examples needs a dataset's examples with indices 0..N-1")
        recorded = self.meta["feature_cache"]
        if cache_dir is None and recorded and os.path.isdir(recorded):
            cache_dir = recorded
        paths = check_wavs(examples, wav_dir)
        settings = dict(
            num_mel_bins=self.audio["num_mel_bins"], max_length=self.audio["max_length"]
        )
        # The training run's dataset-level cache beside the wavs, row by row, when it exists.
        shared = feats.read_shared(paths, wav_dir, **settings)
        if shared is not None:
            items = ((e.index, self._normalise(shared[i])) for i, e in enumerate(examples))
        else:
            items = (
                (e.index, self._normalise(feats.cached_fbank(path, cache_dir, **settings)))
                for e, path in zip(examples, paths, strict=True)
            )
        return self._run(_eval_batches(items, self.batch_size), len(examples))
