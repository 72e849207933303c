"""mh3.audio: posts spoken to wavs, wavs to the log-mel features the AST teacher reads.

    from mh3.audio import chunk, features, tts
    chunk.split_text(text, max_words=45)       # SPEC pieces: pysbd sentences, 45-word chunks
    backend = tts.make_backend(config.tts)     # PiperBackend (22,050 Hz) or BarkBackend (24 kHz)
    tts.synthesize(text, backend, seed=, index=)   # pieces + 0.25 s silence after each
    tts.write_wavs([(i, text), ...], out_dir, backend)  # Sample_{i}.wav, resumable, manifest
    features.load_audio(path)                  # mono float32 at 16 kHz (librosa)
    features.fbank(wave, max_length=512)       # (frames, 128) = ASTFeatureExtractor, unnormalised
    features.cached_fbank(path, cache_dir, max_length=512)   # one .npy per wav and settings
    stats = features.compute_stats(train_feats); features.normalize(x, stats)  # (x-m)/(2 s)
    features.save_stats(path, stats); features.load_stats(path)

The AST teacher itself (training, export, prediction) is `mh3.audio.teacher`.
"""
