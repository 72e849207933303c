"""The audio-teacher stage: fine-tune an AST on the spoken posts (SPEC Stage 3).

Wiring only: finds the wavs (config.audio.wav_dir, or the tts stage's, running that stage first
when files are missing), normalises their fbank features with statistics of the splits the
protocol allows (mh3.audio.teacher), loads the checkpoint with `from_hf` (layers, heads,
dropout, max_length and the position-table rule from config.model) and hands the task to
mh3.train.recipe, which trains, evaluates val and test and writes `<workdir>/model/`: an
ASTForAudioClassification folder plus mh3.json with the preprocessing (`mh3.load` reads it).
"""

import functools
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
from absl import logging

from mh3 import data, files, stages, weights
from mh3.audio import teacher
from mh3.errors import UserError
from mh3.models.ast import ASTClassifier, ASTConfig
from mh3.stages import tts as tts_stage
from mh3.train import parallel, recipe

TINY_RANDOM = "tiny-random"


def check_config(config) -> None:
    """Raises a UserError naming the key of a setting this stage cannot use."""
    splits = tuple(config.audio.stats_splits)
    if not splits or set(splits) - set(data.SPLITS):
        raise UserError(
            f"config audio.stats_splits={splits}; use splits of {data.SPLITS} (clean: train only)"
        )


def tts_config(config) -> ml_collections.ConfigDict:
    """The tts stage's config: config.tts plus this stage's data block (same example order)."""
    tts = ml_collections.ConfigDict(config.tts.to_dict())
    tts.data = ml_collections.ConfigDict(config.data.to_dict())
    tts.lock()
    return tts


def find_wavs(config, workdir: str, ds) -> tuple[str, dict | None]:
    """The wav folder, after running the tts stage when it lacks files. Returns (dir, tts results)."""
    if config.audio.wav_dir:
        if not os.path.isdir(config.audio.wav_dir):
            raise UserError(
                f"config audio.wav_dir={config.audio.wav_dir!r} is not a folder; point it at the "
                "Sample_{i}.wav files or leave it empty to run the tts stage"
            )
        return config.audio.wav_dir, None
    tts, tts_dir, missing = _speech(config, workdir, ds)
    wav_dir = os.path.join(tts_dir, "wavs")
    if missing:
        logging.info("%d wavs missing in %s; running the tts stage", len(missing), wav_dir)
        # force: a finished tts run whose files were deleted must make them again; it keeps
        # every file that is still there, so this costs only the missing ones.
        results = stages.run_stage(tts, tts_dir, force=stages.is_done(tts, tts_dir))
    else:
        results = stages.run_stage(tts, tts_dir)  # done already: just its results
    return wav_dir, results


def _speech(config, workdir: str, ds) -> tuple[ml_collections.ConfigDict, str, list]:
    """The tts stage this stage runs: (its config, its workdir, the examples without a wav)."""
    tts_dir = config.tts_workdir or os.path.join(workdir, "tts")
    missing = teacher.missing_wavs(os.path.join(tts_dir, "wavs"), ds.examples)
    return tts_config(config), tts_dir, missing


def speech_in_background(config, workdir: str, ds) -> tts_stage.Background | None:
    """Starts the tts stage that `find_wavs` would run, in the background (tts_stage.Background),
    or returns None: the wavs are given or all there, or the run spans several processes
    (each host would speak the same files)."""
    if config.audio.wav_dir or parallel.process_count() > 1:
        return None
    tts, tts_dir, missing = _speech(config, workdir, ds)
    if not missing:
        return None
    logging.info("%d wavs missing in %s; speaking them in the background", len(missing), tts_dir)
    try:
        return tts_stage.Background(tts, tts_dir, force=stages.is_done(tts, tts_dir))
    except OSError as e:  # e.g. an unwritable workdir: the stage itself reports it in one line
        logging.warning("no background speech (%s); the audio teacher will speak the posts", e)
        return None


def checkpoint(config, workdir: str, seed: int) -> str:
    """The checkpoint to fine-tune: config.model.name, or for `tiny-random` a small RANDOMLY
    INITIALISED HF AST (config.model.tiny) written into the workdir once, from `seed`.

    The tiny one is not a pretrained model: it stands in for the AudioSet AST where no model
    hub can be reached, so the pipeline runs offline end to end. It is an HF folder
    (config.json + model.safetensors) so it goes through the same `from_hf` path,
    position-table adaptation included.
    """
    if config.model.name != TINY_RANDOM:
        return config.model.name
    logging.warning("model=tiny-random: a RANDOMLY INITIALISED AST (demo only, not pretrained)")
    folder = os.path.join(workdir, "tiny_random_ast")
    wanted = {**config.model.tiny, "num_mel_bins": config.audio.num_mel_bins}
    if _holds_tiny(folder, wanted):
        return folder
    settings = ASTConfig(**wanted, num_labels=2)  # HF's defaults elsewhere, as its ASTConfig
    model = ASTClassifier(settings)
    # Only the shapes from flax (0.2 s; running its init: 1.7 s jitted): values drawn as HF
    # initialises an AST, N(0, initializer_range) weights, zero biases and unit LayerNorm
    # scales, except that the CLS/distillation tokens and the position table (zeros in HF) are
    # random too, so the demo exercises what a pretrained table goes through (resample/zeros).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), weights.ast.example_batch(settings))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("bias", "scale"):
            return np.full(leaf.shape, 1.0 if name == "scale" else 0.0, np.float32)
        return (settings.initializer_range * rng.standard_normal(leaf.shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes["params"])
    os.makedirs(workdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-ast-", dir=workdir)
    try:
        weights.save_hf(tmp, model, params, id2label=["LABEL_0", "LABEL_1"])  # HF's default names
        # One made for other config.model.tiny settings (an earlier run) goes: its architecture
        # would not be the one asked for.
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)  # a half-written folder is never seen under the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("wrote a randomly initialised tiny AST (demo only, not pretrained) to %s", folder)
    return folder


def _holds_tiny(folder: str, wanted: dict) -> bool:
    """Whether `folder` holds a tiny AST written for the `wanted` architecture settings."""
    try:
        saved = files.read_json(os.path.join(folder, "config.json"))
    except (OSError, ValueError):
        return False
    return all(saved.get(k) == v for k, v in wanted.items())


def overrides(config) -> dict:
    """The `from_hf` overrides config.model and config.audio ask for (unset ones left out)."""
    m = config.model
    out = {"max_length": config.audio.max_length, "position_table": m.position_table}
    if m.num_hidden_layers > 0:
        out["num_hidden_layers"] = m.num_hidden_layers
    if m.num_attention_heads > 0:
        out["num_attention_heads"] = m.num_attention_heads
    if m.hidden_dropout_prob >= 0:
        out["hidden_dropout_prob"] = m.hidden_dropout_prob
    return out


def run(config, workdir: str) -> dict:
    """Trains and saves the audio teacher; returns the results.json content (module docstring)."""
    check_config(config)
    ds = data.load_dataset(config.data)
    keys = recipe.keys(config.seed)
    init_seed = recipe.key_seed(keys["init"])  # the tiny-random weights and the new head
    wav_dir, tts_results = find_wavs(config, workdir, ds)
    audio = config.audio
    cache_dir = audio.cache_dir or os.path.join(workdir, "features")
    x, stats = teacher.normalised_features(
        ds.examples, wav_dir, cache_dir, max_length=audio.max_length,
        num_mel_bins=audio.num_mel_bins, stats_splits=audio.stats_splits,
    )  # fmt: skip
    model, params = weights.from_hf(
        checkpoint(config, workdir, init_seed),
        num_labels=len(ds.classes),
        seed=init_seed,
        dtype=weights.DTYPES[config.model.compute_dtype],
        **overrides(config),
    )
    save = functools.partial(
        teacher.save, model=model, classes=ds.classes, protocol=config.protocol,
        data_fingerprint=ds.fingerprint, feature_cache=cache_dir,
        audio=teacher.audio_settings(audio, stats),
    )  # fmt: skip
    task = teacher.task(
        model, params, x, ds, batch_size=config.data.batch_size,
        eval_batch_size=config.data.eval_batch_size, seed=config.seed,
        group_batches=config.data.group_batches, save=save,
    )  # fmt: skip
    _, results = recipe.train(config, workdir, task, rng=keys["dropout"])
    results.update(
        data=ds.summary(), data_fingerprint=ds.fingerprint, synthetic_data=ds.synthetic,
        random_init_model=config.model.name == TINY_RANDOM, wav_dir=wav_dir, stats=stats,
    )  # fmt: skip
    if tts_results is not None:
        results["tts_workdir"] = tts_results["workdir"]
    return results
