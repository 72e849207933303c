"""Knowledge-distillation losses of the 3M-Health student (SPEC stage 4).

The student minimises, per example,

    ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p || softmax(z_s / T)) / norm

where p = sum_k w_k softmax(z_k / T) / sum_k w_k averages the teachers in probability space.
`reduction` sets `norm`:
- `batchmean` (clean default): norm = 1, the KL divergence of each example, averaged over the
  batch by the train step: the textbook distillation loss;
- `paper`: norm = C (number of classes), which is what torch's `KLDivLoss()` default
  (`reduction='mean'`, a mean over batch x classes) computes in the authors' notebooks.
The paper uses T = 1 and equal weights. Losses are returned per example; the train step takes
the masked mean over the real examples of the global batch (mh3/train/steps.py).
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy

REDUCTIONS = ("batchmean", "paper")


def teacher_probs(
    teacher_logits: jax.Array, weights: jax.Array | None = None, temperature: float = 1.0
) -> jax.Array:
    """Averages the teachers' softmax outputs.

    Args:
      teacher_logits: (B, K, C) logits of K teachers.
      weights: (K,) non-negative teacher weights (None: equal).
      temperature: softmax temperature T.

    Returns:
      (B, C) probabilities.
    """
    probs = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    if weights is None:
        return probs.mean(axis=1)
    weights = jnp.asarray(weights, jnp.float32)
    return jnp.einsum("bkc,k->bc", probs, weights / weights.sum())


def kd_per_example(
    student_logits: jax.Array,
    labels: jax.Array,
    target_probs: jax.Array | None,
    *,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> tuple[jax.Array, dict]:
    """Per-example distillation loss (see module docstring) and its two terms.

    `target_probs=None` (no teachers) gives plain cross-entropy, the fine-tuning baseline.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; choose one of {REDUCTIONS}")
    logits = student_logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if target_probs is None:
        return ce_weight * ce, {"ce": ce, "kd": jnp.zeros_like(ce)}
    log_q = jax.nn.log_softmax(logits / temperature, axis=-1)
    # xlogy: a teacher probability of exactly 0 contributes 0, as in torch's KLDivLoss.
    kl = jnp.sum(xlogy(target_probs, target_probs) - target_probs * log_q, axis=-1)
    norm = logits.shape[-1] if reduction == "paper" else 1.0
    kd = kl * temperature**2 / norm
    return ce_weight * ce + kd_weight * kd, {"ce": ce, "kd": kd}


def student_loss(
    params,
    apply_fn,
    batch,
    dropout_rng,
    train,
    *,
    ce_weight: float,
    kd_weight: float,
    temperature: float,
    reduction: str,
    teacher_weights: tuple[float, ...] | None,
):
    """A `loss_fn` for mh3.train.steps: the student on `batch`, teachers from `teacher_logits`.

    `batch['teacher_logits']` (B, K, C) holds the cached logits of the K teachers for each
    example (absent for the no-teacher baseline). `aux['terms']` holds the per-example CE and
    KD terms (`loss_ce`, `loss_kd`, unweighted), which the steps report beside the loss.
    Bind the keyword arguments with `functools.partial` (or use `make_student_loss`).
    """
    inputs = {
        k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    logits, _ = apply_fn({"params": params}, inputs, train=train, rngs={"dropout": dropout_rng})
    target = None
    if "teacher_logits" in batch:
        weights = None if teacher_weights is None else jnp.asarray(teacher_weights)
        target = teacher_probs(batch["teacher_logits"], weights, temperature)
    loss, terms = kd_per_example(
        logits,
        batch["label"],
        target,
        ce_weight=ce_weight,
        kd_weight=kd_weight,
        temperature=temperature,
        reduction=reduction,
    )
    # The unweighted parts, for the logs: loss = ce_weight * loss_ce + kd_weight * loss_kd.
    terms = {"loss_ce": terms["ce"], "loss_kd": terms["kd"]}
    return loss, {"logits": logits.astype(jnp.float32), "terms": terms}


def make_student_loss(kd_config, teacher_weights: tuple[float, ...] | None = None):
    """Binds `student_loss` to a config block with ce_weight, kd_weight, temperature, reduction.

    Equal settings give the same function object, so the training loop's compiled steps
    (cached per loss function) are reused by every student run of a pipeline.
    """
    return _bound_student_loss(
        float(kd_config.ce_weight),
        float(kd_config.kd_weight),
        float(kd_config.temperature),
        str(kd_config.reduction),
        None if teacher_weights is None else tuple(map(float, teacher_weights)),
    )


@functools.cache
def _bound_student_loss(ce_weight, kd_weight, temperature, reduction, teacher_weights):
    return functools.partial(
        student_loss, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature,
        reduction=reduction, teacher_weights=teacher_weights,
    )  # fmt: skip
