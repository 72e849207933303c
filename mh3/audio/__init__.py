"""mh3.audio: posts spoken to wavs, wavs to the log-mel features the AST teacher reads.

    from mh3.audio import bark, chunk, features, piper, tts
    chunk.split_text(text, max_words=45)       # SPEC pieces: pysbd sentences, 45-word chunks
    backend = tts.make_backend(config.tts)     # piper or bark, as config.tts.backend names
    piper.PiperBackend(voice='joe')            # 22,050 Hz, seeded: same text and seed, same bytes
    bark.BarkBackend(model)                    # 24 kHz, the paper's voice (torch, transformers)
    tts.synthesize(text, backend, seed=, index=)   # pieces + 0.25 s silence after each
    tts.write_wavs([(i, text), ...], out_dir, backend)  # Sample_{i}.wav, resumable, manifest
    features.load_audio(path)                  # mono float32 at 16 kHz (librosa)
    features.fbank(wave, max_length=512)       # (frames, 128) = ASTFeatureExtractor, unnormalised
    features.cached_fbank(path, cache_dir, max_length=512)   # one .npy per wav and settings
    stats = features.compute_stats(train_feats); features.normalize(x, stats)  # (x-m)/(2 s)
    features.save_stats(path, stats); features.load_stats(path)

The AST teacher (`mh3.audio.teacher`): the task its stage trains, and its saved model.

    x, stats = teacher.normalised_features(examples, wav_dir, cache_dir, max_length=,
                                           num_mel_bins=, stats_splits=("train",))
    teacher.task(model, params, x, dataset, batch_size=, eval_batch_size=, seed=, save=)
    p = mh3.load("<workdir>/model")              # an AudioPredictor
    p.predict([wave_16k, "post.wav"])            # (N, C) probabilities, training preprocessing
    p.logits_examples(dataset.examples, wav_dir)  # (N, C) logits, row i = example index i
"""
