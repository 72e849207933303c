"""KD losses against torch's CrossEntropyLoss and KLDivLoss on the same numbers."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mh3.distill import losses


def numbers(seed=0, b=6, k=3, c=4):
    rng = np.random.RandomState(seed)
    student = rng.randn(b, c).astype(np.float32) * 2
    teachers = rng.randn(b, k, c).astype(np.float32) * 3
    labels = rng.randint(0, c, b)
    return student, teachers, labels


def torch_target(teachers, temperature=1.0):
    return torch.softmax(torch.tensor(teachers) / temperature, dim=-1).mean(dim=1)


@pytest.mark.parametrize("reduction", ["paper", "batchmean"])
def test_matches_torch_ce_plus_kldiv(reduction):
    student, teachers, labels = numbers()
    target = losses.teacher_probs(jnp.asarray(teachers))
    per_example, terms = losses.kd_per_example(
        jnp.asarray(student), jnp.asarray(labels), target, reduction=reduction
    )
    z = torch.tensor(student)
    ce = torch.nn.CrossEntropyLoss()(z, torch.tensor(labels))
    # The notebooks' KLDivLoss() default is reduction='mean': a mean over batch x classes.
    torch_reduction = "mean" if reduction == "paper" else "batchmean"
    kd = torch.nn.KLDivLoss(reduction=torch_reduction)(
        torch.log_softmax(z, dim=-1), torch_target(teachers)
    )
    np.testing.assert_allclose(float(per_example.mean()), float(ce + kd), rtol=1e-6)
    np.testing.assert_allclose(float(terms["ce"].mean()), float(ce), rtol=1e-6)
    np.testing.assert_allclose(float(terms["kd"].mean()), float(kd), rtol=1e-6)


def test_paper_kd_is_batchmean_divided_by_classes():
    student, teachers, labels = numbers(seed=1, c=5)
    target = losses.teacher_probs(jnp.asarray(teachers))
    args = (jnp.asarray(student), jnp.asarray(labels), target)
    paper = losses.kd_per_example(*args, reduction="paper")[1]["kd"]
    clean = losses.kd_per_example(*args, reduction="batchmean")[1]["kd"]
    np.testing.assert_allclose(np.asarray(paper) * 5, np.asarray(clean), rtol=1e-6)


def test_temperature_scaling_matches_torch():
    student, teachers, labels = numbers(seed=2)
    t = 3.0
    target = losses.teacher_probs(jnp.asarray(teachers), temperature=t)
    per_example, _ = losses.kd_per_example(
        jnp.asarray(student), jnp.asarray(labels), target, temperature=t, ce_weight=0.0
    )
    z = torch.tensor(student)
    kd = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(z / t, dim=-1), torch_target(teachers, t)
    ) * (t * t)
    np.testing.assert_allclose(float(per_example.mean()), float(kd), rtol=1e-6)


def test_weights_and_zero_probabilities():
    student, teachers, labels = numbers(seed=3)
    teachers[:, 0] = -1e9  # a confident teacher: exact zeros in its probabilities
    teachers[:, 0, 1] = 0.0
    weights = jnp.asarray([2.0, 1.0, 1.0])
    target = losses.teacher_probs(jnp.asarray(teachers), weights)
    probs = torch.softmax(torch.tensor(teachers), -1)
    expect = (2 * probs[:, 0] + probs[:, 1] + probs[:, 2]) / 4
    np.testing.assert_allclose(np.asarray(target), expect.numpy(), rtol=1e-6, atol=1e-7)
    assert float(jnp.min(target)) >= 0.0
    per_example, _ = losses.kd_per_example(jnp.asarray(student), jnp.asarray(labels), target)
    kd = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(torch.tensor(student), -1), expect
    )
    ce = torch.nn.CrossEntropyLoss()(torch.tensor(student), torch.tensor(labels))
    assert np.isfinite(np.asarray(per_example)).all()
    np.testing.assert_allclose(float(per_example.mean()), float(ce + kd), rtol=1e-5)


def test_no_teachers_is_plain_cross_entropy():
    student, _, labels = numbers(seed=4)
    per_example, _ = losses.kd_per_example(jnp.asarray(student), jnp.asarray(labels), None)
    ce = torch.nn.CrossEntropyLoss()(torch.tensor(student), torch.tensor(labels))
    np.testing.assert_allclose(float(per_example.mean()), float(ce), rtol=1e-6)


def test_unknown_reduction_raises():
    student, teachers, labels = numbers()
    with pytest.raises(ValueError, match="reduction"):
        losses.kd_per_example(
            jnp.asarray(student), jnp.asarray(labels), jnp.asarray(teachers[:, 0]), reduction="x"
        )
