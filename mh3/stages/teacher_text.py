"""The text-teacher stage: fine-tune a BERT-family classifier and save it (SPEC Stage 3).

Loads the dataset and builds the teacher's tokenizer with the added tokens, then trains the
text fine-tuning task (mh3.train.finetune) with the one recipe (mh3.train.recipe: resumable
training, val/test metrics, confusion PNGs, per-example test predictions) and saves it in
`<workdir>/model/` (a Hugging Face folder and an mh3 saved model; mh3.train.export).
"""

from mh3 import data
from mh3.train import finetune, recipe


def run(config, workdir: str) -> dict:
    prep = data.prepare(config.data)
    keys = recipe.keys(config.seed)
    task = finetune.text_task(config, prep, keys)
    _, results = recipe.train(config, workdir, task, rng=keys["dropout"])
    return {"data": prep.dataset.summary(), "max_len": prep.max_len, **results}
