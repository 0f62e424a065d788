"""Lean training: per-stage activation checkpointing changes memory, not gradients; the training
memory estimate behaves (sanity and shape, not timing); budgets → φ on the CLI."""

from __future__ import annotations

import pytest
import torch

from effnet import cli
from effnet.catalog import get_spec
from effnet.deploy.memory import estimate_train_memory
from effnet.model import ConvNet


def _grads(model: ConvNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # same stochastic-depth masks in both runs
    model(x).square().mean().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stages", [None, (0, 2)])
def test_grad_checkpointing_gives_identical_grads(tiny_spec, stages):
    model = ConvNet(tiny_spec, num_classes=10, drop_path_rate=0.2).train()
    x = torch.randn(4, 3, 32, 32)
    ref = _grads(model, x)
    model.set_grad_checkpointing(True, stages=stages)
    assert model.grad_checkpointing == ((0, 1, 2) if stages is None else stages)
    got = _grads(model, x)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    model.set_grad_checkpointing(False)
    assert model.grad_checkpointing == ()
    with pytest.raises(ValueError, match="out of range"):
        model.set_grad_checkpointing(True, stages=[5])


def test_b0_estimate_matches_the_known_saved_activations():
    """timm's B0 saves 2713 MB for backward at batch 32 (docs/performance-notes.md); same net here."""
    est = estimate_train_memory(get_spec("efficientnet_b0"), 32)
    assert 2600 < est.activations / 2**20 < 2850  # the reference counts MB of 2**20 bytes
    assert est.total > est.activations + est.parameters


def test_estimate_is_linear_in_batch_and_checkpointing_saves(tiny_spec):
    one, four = estimate_train_memory(tiny_spec, 1), estimate_train_memory(tiny_spec, 4)
    assert four.activations == 4 * one.activations and four.parameters == one.parameters
    ckpt = estimate_train_memory(tiny_spec, 4, grad_checkpointing=True)
    assert ckpt.activations < four.activations
    bigger = estimate_train_memory(get_spec("efficientnet_b0", phi=1), 4)
    assert bigger.total > estimate_train_memory(get_spec("efficientnet_b0"), 4).total
    with pytest.raises(ValueError, match="optimizer"):
        estimate_train_memory(tiny_spec, 1, optimizer="lion")


def test_fit_max_train_memory(capsys):
    assert cli.main(["fit", "resnet18", "--max-train-memory", "3G", "--batch", "8", "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["bytes"] <= 3 * 2**30 < r["next_bytes"]
    assert cli.main(["fit", "efficientnet_b0", "--max-train-memory", "8G"]) == 2
    assert "--batch" in capsys.readouterr().err
