"""mh3.data: posts in, batches out, the same way for every stage (SPEC Stage 0).

Public API (everything else in the package is internal):

    from mh3 import data
    ds = data.load_dataset(config.data)          # Dataset, global order train, val, test
    ds.classes                                   # class names in label order
    ds.examples[i]                               # Example(id, text, raw, label, split, index=i)
    ds.split('train')                            # list[Example] of one split
    ds.summary()                                 # {train, val, test, classes, per_class}
    ds.fingerprint                               # changes when any example does
    ds.synthetic                                 # True for the embedded demo data

    tok = data.build_tokenizer(config.data.tokenizer, ds, splits=config.data.added_token_splits)
    tok.hf, tok.vocab_size, tok.num_added, tok.pad_id, tok.save(folder)
    # grow the model's word embeddings to tok.vocab_size rows (mh3.weights.grow_vocab)
    tok = data.load_tokenizer(folder)            # one saved by tok.save, added tokens included

    max_len = data.max_len_for(tok, ds.split('train'), config.data.max_len)
    enc = data.encode(tok, ds.split('train'), max_len)   # Encoded: ids, labels, index
    buckets = data.bucket_lengths(enc.lengths, max_len, config.data.num_buckets,
                                  config.data.bucket_multiple)   # or None: pad to max_len
    for batch in data.batches(enc, config.data.batch_size, pad_id=tok.pad_id, train=True,
                              seed=config.seed, epoch=epoch, buckets=buckets,
                              group_batches=config.data.group_batches,
                              process_index=jax.process_index(),
                              process_count=jax.process_count()):
        ...  # batch: input_ids, attention_mask, token_type_ids (B, L); label, mask, index (B,)

    prep = data.prepare(config.data)             # all of the above in one call (Prepared):
    prep.dataset, prep.tokenizer, prep.max_len, prep.encoded[split], prep.buckets
    prep.batches('val', config.data.eval_batch_size, train=False)   # pad id and buckets filled in
    data.preprocess(text)                        # the SPEC preprocessing of one text

Rows with `mask == 0` are padding: weight losses and metrics by `mask`. Audio and cached
soft labels are keyed by `Example.index` (`Sample_{index}.wav`). The demo dataset is SYNTHETIC.
"""

from mh3.data.batching import batches, bucket_lengths, num_batches
from mh3.data.dataset import SPLITS, Dataset, Example, check_trainable, load_dataset
from mh3.data.prepare import Prepared, prepare
from mh3.data.preprocess import preprocess
from mh3.data.registry import NAMES
from mh3.data.tokenize import (
    Encoded,
    Tokenizer,
    build_tokenizer,
    encode,
    load_tokenizer,
    max_len_for,
)

__all__ = [
    "NAMES", "SPLITS", "Dataset", "Encoded", "Example", "Prepared", "Tokenizer", "batches",
    "bucket_lengths", "build_tokenizer", "check_trainable", "encode", "load_dataset", "load_tokenizer",
    "max_len_for", "num_batches", "prepare", "preprocess",
]  # fmt: skip
