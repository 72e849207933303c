"""The `tts` stage: every example's preprocessed text spoken into `wavs/Sample_{i}.wav`.

Thin: the dataset comes from mh3.data (global order, preprocessed text), the backend and the
resumable writer from mh3.audio.tts. Resuming is per file, so a killed run keeps what it made.
"""

import os

from mh3 import data
from mh3.audio import tts


def run(config, workdir: str) -> dict:
    workers = tts.resolve_workers(config.tts.workers)  # a bad count fails before any work
    ds = data.load_dataset(config.data)
    examples = ds.examples
    if config.tts.max_examples:
        examples = examples[: config.tts.max_examples]
    backend = tts.make_backend(config.tts)
    out_dir = os.path.join(workdir, "wavs")
    made = tts.write_wavs(
        [(e.index, e.text) for e in examples],
        out_dir,
        backend,
        seed=config.seed,
        max_words=config.tts.max_words,
        pause_s=config.tts.pause_s,
        workers=workers,
    )
    return {
        "data": ds.summary(),
        "data_fingerprint": ds.fingerprint,
        "synthetic_data": ds.synthetic,
        "wav_dir": out_dir,
        "backend": backend.name,
        "sample_rate": backend.sample_rate,
        # piper's wavs are checked byte for byte (tests/test_tts.py); bark seeds torch per
        # piece but is not checked that way
        "deterministic": backend.name == "piper",
        **made,
    }
