"""The audio-teacher stage: fine-tune an AST on the spoken posts and export it (SPEC Stage 3).

Finds the wavs (config.audio.wav_dir, or the tts stage's, running that stage first when files
are missing), computes the fbank features (cached per file), the normalisation statistics of
the splits the protocol allows, loads the checkpoint with `from_hf` (layers, heads, dropout,
max_length and the position-table rule from config.model), trains with mh3.train.loop
(Adam, reduce-on-plateau and the paper's early stopping on the validation loss), evaluates val
and test, and writes `params/` (mh3.audio.teacher) for the student stage.
"""

import functools
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from mh3 import data, stages, weights
from mh3.audio import features as feats
from mh3.audio import teacher
from mh3.errors import UserError
from mh3.train import checkpoints, export, loop, optim, parallel, steps
from mh3.train import state as state_lib


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
    tts_dir = config.tts_workdir or os.path.join(workdir, "tts")
    wav_dir = os.path.join(tts_dir, "wavs")
    tts = tts_config(config)
    missing = teacher.missing_wavs(wav_dir, ds.examples)
    if missing:
        logging.info("%d wavs missing in %s; running the tts stage", len(missing), wav_dir)
        # force: a finished tts run whose files were deleted must make them again; it keeps
        # every file that is still there, so this costs only the missing ones.
        results = stages.run_stage(tts, tts_dir, force=stages.is_done(tts, tts_dir))
    else:
        results = stages.run_stage(tts, tts_dir)  # done already: just its results
    return wav_dir, results


def checkpoint(config, workdir: str) -> str:
    """The checkpoint to fine-tune; `tiny-random` is written into the workdir first."""
    if config.model.name != teacher.TINY_RANDOM:
        return config.model.name
    tiny = config.model.tiny
    logging.warning("model=tiny-random: a RANDOMLY INITIALISED AST (demo only, not pretrained)")
    return teacher.make_tiny_random(
        os.path.join(workdir, "tiny_random_ast"),
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        intermediate_size=tiny.intermediate_size,
        max_length=tiny.max_length,
        num_mel_bins=config.audio.num_mel_bins,
        seed=config.seed,
    )


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
    if config.model.compute_dtype not in export.DTYPES:
        raise UserError(
            f"config model.compute_dtype={config.model.compute_dtype!r}; "
            f"choose one of {list(export.DTYPES)}"
        )
    unknown = set(config.audio.stats_splits) - set(data.SPLITS)
    if unknown or not config.audio.stats_splits:
        raise UserError(
            f"config audio.stats_splits={tuple(config.audio.stats_splits)}; use splits of "
            f"{data.SPLITS} (clean: train only)"
        )
    ds = data.load_dataset(config.data)
    classes = list(ds.classes)
    n_dev = parallel.device_count() * parallel.process_count()
    for key in ("batch_size", "eval_batch_size"):
        if config.data[key] % n_dev:
            raise UserError(f"config data.{key}={config.data[key]} must be a multiple of {n_dev}")

    wav_dir, tts_results = find_wavs(config, workdir, ds)
    cache_dir = config.audio.cache_dir or os.path.join(workdir, "features")
    x = teacher.load_features(
        ds.examples, wav_dir, cache_dir,
        max_length=config.audio.max_length, num_mel_bins=config.audio.num_mel_bins,
    )  # fmt: skip
    split_of = np.array([e.split for e in ds.examples])
    stats = feats.compute_stats(x[np.isin(split_of, config.audio.stats_splits)])
    logging.info(
        "fbank stats over %s: mean %.4f std %.4f",
        "+".join(config.audio.stats_splits), stats["mean"], stats["std"],
    )  # fmt: skip
    x = feats.normalize(x, stats)
    labels = np.array([e.label for e in ds.examples], np.int32)
    indices = np.array([e.index for e in ds.examples], np.int32)
    rows = {s: np.flatnonzero(split_of == s) for s in data.SPLITS}

    model, params = weights.from_hf(
        checkpoint(config, workdir),
        num_labels=len(classes),
        seed=config.seed,
        dtype=export.DTYPES[config.model.compute_dtype],
        **overrides(config),
    )
    proc = dict(process_index=parallel.process_index(), process_count=parallel.process_count())
    steps_per_epoch = data.num_batches(
        len(rows["train"]), config.data.batch_size, proc["process_count"]
    )
    total = config.train.num_steps or config.train.epochs * steps_per_epoch
    tx = optim.make(config.optim, max(total // config.optim.accumulate_steps, 1))
    state = state_lib.create(
        model.apply, params, tx, jax.random.PRNGKey(config.seed), optim.plateau(config.optim)
    )

    def split_batches(split, train, epoch=0):
        size = config.data.batch_size if train else config.data.eval_batch_size
        return teacher.batches(x, labels, indices, size, rows=rows[split], train=train,
                               seed=config.seed, epoch=epoch, **proc)  # fmt: skip

    final, history = loop.fit(
        state,
        loss_fn=steps.classification_loss,
        train_batches=lambda epoch: split_batches("train", True, epoch),
        steps_per_epoch=steps_per_epoch,
        val_batches=(lambda: split_batches("val", False)) if len(rows["val"]) else None,
        train_config=config.train,
        workdir=workdir,
        fingerprint=checkpoints.fingerprint(config),
        class_names=classes,
    )

    p_eval = parallel.pmap(functools.partial(steps.eval_step, loss_fn=steps.classification_loss))
    pstate = parallel.replicate(final)
    results = {
        "data": ds.summary(),
        "data_fingerprint": ds.fingerprint,
        "synthetic_data": ds.synthetic,
        "random_init_model": config.model.name == teacher.TINY_RANDOM,
        "wav_dir": wav_dir,
        "stats": stats,
        "history": history,
    }
    if tts_results is not None:
        results["tts_workdir"] = tts_results["workdir"]
    sizes = {s: len(rows[s]) for s in ("val", "test")}
    results.update(
        loop.report_splits(
            pstate, p_eval, lambda s: split_batches(s, False), sizes, classes, workdir, ds.name
        )
    )
    params_dir = os.path.join(workdir, "params")
    if parallel.process_index() == 0:
        teacher.save_audio_teacher(
            params_dir, model, final.params, classes=classes, stats=stats, feature_cache=cache_dir
        )
    results["params"] = params_dir
    return results
