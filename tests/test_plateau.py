"""The plateau scheduler against torch's ReduceLROnPlateau on the same validation losses.

torch cuts the rate on the (patience+1)-th epoch without improvement (SPEC addendum);
`optim.plateau_rule='torch'` must give the same multiplier after every epoch, ties within the
relative threshold included; `optax` is optax's rule (one epoch earlier).
"""

import ml_collections
import numpy as np
import pytest
import torch

from mh3.errors import UserError
from mh3.train import optim

# Improvements, exact ties, and changes smaller than the 1e-4 relative threshold (not improvements).
LOSSES = [1.0, 0.9, 0.9, 0.89995, 0.95, 0.9, 0.8, 0.79995, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7]
LOSSES += [0.69995, 0.69, 0.7, 0.7, 0.7, 0.7, 0.7, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]


def _optim(patience, factor, lr=1e-3, rule="torch"):
    cfg = optim.default_config()
    cfg.update(plateau_patience=patience, plateau_factor=factor, learning_rate=lr)
    cfg.plateau_rule = rule
    return cfg


def _torch_scales(losses, patience, factor, lr):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=factor, patience=patience, threshold=1e-4
    )
    out = []
    for v in losses:
        sched.step(v)
        out.append(opt.param_groups[0]["lr"] / lr)
    return out


def _mh3_scales(losses, cfg):
    tx = optim.plateau(cfg)
    state = tx.init({})
    out = []
    for v in losses:
        _, state = tx.update({}, state, value=v)
        out.append(float(state.scale))
    return out


@pytest.mark.parametrize(
    "patience,factor,lr",
    [
        (1, 0.5, 1e-3),
        (2, 0.1, 5e-5),
        (3, 0.5, 1e-4),
        (4, 0.1, 5e-5),
        (5, 0.5, 1e-5),
        (1, 0.1, 1e-6),
    ],
)
def test_torch_rule_matches_reduce_lr_on_plateau(patience, factor, lr):
    """Same multiplier after every epoch (the last case also hits torch's eps: no cut below)."""
    want = _torch_scales(LOSSES, patience, factor, lr)
    got = _mh3_scales(LOSSES, _optim(patience, factor, lr))
    assert len(set(want)) > 1  # the sequence does cut the rate
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_optax_rule_cuts_one_epoch_earlier():
    """`optax` with patience p cuts exactly where torch's rule with p - 1 does."""
    got = _mh3_scales(LOSSES, _optim(3, 0.5, rule="optax"))
    np.testing.assert_allclose(got, _torch_scales(LOSSES, 2, 0.5, 1e-3), rtol=1e-6)
    assert got != _torch_scales(LOSSES, 3, 0.5, 1e-3)


def test_both_protocols_use_torch_rule_and_unknown_rule_is_a_user_error():
    assert optim.default_config().plateau_rule == "torch"
    with pytest.raises(UserError, match="plateau_rule"):
        optim.plateau(_optim(2, 0.5, rule="keras"))
    assert optim.plateau(ml_collections.ConfigDict(dict(plateau_patience=0))) is None
