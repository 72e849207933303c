"""The evaluate stage: score a saved model on the test split of a labelled dataset.

The dataset is loaded and split with `config.data`, as in training; the model's classes must
equal the dataset's. Writes every classification metric (mh3.train.metrics), the confusion
PNG and the per-example predictions (`predictions_test.csv`, as training stages write them).
"""

import os

import numpy as np

from mh3 import data, saved_model
from mh3.errors import UserError
from mh3.train import metrics, recipe


def run(config, workdir: str) -> dict:
    predictor = saved_model.load(config.model)
    ds = data.load_dataset(config.data)
    predictor.check_classes(ds.classes, f"dataset {ds.name}")
    test = ds.split("test")
    if not test:
        raise UserError(f"dataset {ds.name} has no test examples; check --config.data.path")
    if predictor.kind == "audio":
        if not config.wav_dir:
            raise UserError("an audio model needs --config.wav_dir=DIR with Sample_<index>.wav")
        logits = predictor.logits_examples(test, config.wav_dir)
    else:
        logits = predictor.logits_examples(test)
    out = {
        "logits": logits,
        "labels": np.array([e.label for e in test]),
        "mask": np.ones(len(test)),
        "index": np.array([e.index for e in test]),
    }
    scores = metrics.classification(out["logits"], out["labels"], out["mask"], ds.classes)
    png = os.path.join(workdir, "confusion_test.png")
    metrics.plot_confusion(scores["confusion_matrix"], ds.classes, png, f"test ({ds.name})")
    preds = os.path.join(workdir, "predictions_test.csv")
    recipe.write_predictions(preds, out, ds.classes, [e.id for e in ds.examples])
    print(f"test accuracy {scores['accuracy']:.4f} f1_weighted {scores['f1_weighted']:.4f}")
    return {
        "model": config.model,
        "kind": predictor.kind,
        "data": ds.summary(),
        "test": {**scores, "confusion_png": png, "predictions": preds},
    }
