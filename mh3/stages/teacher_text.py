"""The text-teacher stage: fine-tune a BERT-family classifier and export it (SPEC Stage 3).

Loads the dataset and builds the teacher's tokenizer with the added tokens, then fine-tunes
with the shared recipe (mh3.train.finetune: from_hf with config.model's overrides, vocabulary
growth, resumable training, val/test metrics and confusion PNGs), and writes `params/` (see
mh3.train.export) for the student stage.
"""

import os

from mh3 import data
from mh3.train import export, finetune, parallel


def run(config, workdir: str) -> dict:
    prep = data.prepare(config.data)
    model, final, results = finetune.train_text_classifier(config, workdir, prep)
    params_dir = os.path.join(workdir, "params")
    if parallel.process_index() == 0:
        export.save_text_teacher(
            params_dir, model, final.params, prep.tokenizer, classes=prep.dataset.classes,
            max_len=prep.max_len,
        )  # fmt: skip
    results["params"] = params_dir
    return results
