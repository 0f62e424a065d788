"""Training that cannot blow up silently: loss guards in the loop and the budget trainer, precise BN,
the warmup fitted to the run, and a folder without train/ trained on a stated held-out split."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from effnet.cli.app import main
from effnet.train.config import TrainConfig, fit_warmup
from effnet.train.guards import LossGuard, TrainingDiverged, check_val_loss, recalibrate_bn

pytest.importorskip("sklearn")

TINY = ["--model", "efficientnet_b0", "--phi", "-8", "--total-stride", "8", "--resolution", "16", "--batch-size",
        "32", "--workers", "0", "--no-progress", "--no-tensorboard", "--amp", "none", "--warmup-epochs", "0.2"]


def test_guard_stops_on_non_finite_and_exploding_losses() -> None:
    guard = LossGuard(10.0, settle=3)
    for step, loss in enumerate([2.3, 2.2, 2.1, 2.0]):
        guard.check(loss, step, 0.01)
    with pytest.raises(TrainingDiverged, match=r"step 4: loss 50 is 22x its running average"):
        guard.check(50.0, 4, 0.01)
    with pytest.raises(TrainingDiverged, match=r"step 5: the loss became nan; lower the learning rate \(it was 3"):
        guard.check(float("nan"), 5, 3.0)
    LossGuard(enabled=False).check(float("inf"), 0, 1.0)  # --no-loss-guard
    assert check_val_loss(233.0, 2.16, 2, 88) is not None and "233" in check_val_loss(233.0, 2.16, 2, 88)
    assert check_val_loss(2.5, 2.16, 2, 88) is None


def test_precise_bn_replaces_lagging_statistics_by_the_data_s() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01), nn.Dropout(0.5))
    data = [torch.randn(8, 3, 5, 5) * 3 + 1 for _ in range(4)]
    assert recalibrate_bn(model, data) == 4
    feats = torch.cat([model[0](x) for x in data]).detach()
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert model[1].momentum == 0.01 and model.training  # settings restored


def test_warmup_is_fitted_to_a_short_run() -> None:
    with pytest.warns(UserWarning, match="shortened from the paper's 5 epochs to 0.2"):
        assert fit_warmup(None, 1.0) == pytest.approx(0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_warmup(None, 350.0) == 5.0 and fit_warmup(0.1, 1.0) == 0.1
    with pytest.warns(UserWarning, match="may learn little"):
        assert fit_warmup(5.0, 1.0) == 5.0  # an explicit choice is kept, with a warning
    assert TrainConfig(epochs=350).resolved().warmup_epochs == 5.0


def test_absurd_learning_rate_stops_with_step_and_cause_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    base = ["train", "--data", "digits", "--train-subset", "256", *TINY, "--out", str(out)]
    assert main([*base, "--epochs", "1"]) == 0
    good = {name: (out / name).read_bytes() for name in ("last.safetensors", "state.pt", "metrics.csv")}
    capsys.readouterr()
    # Resumed with changed settings (the case that once trained on to a validation loss of 68 million):
    with pytest.warns(UserWarning, match=r"settings changed since the run started \(epochs, lr\)"):
        assert main([*base, "--epochs", "2", "--lr", "1e6", "--resume"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("effnet: error: training diverged at step ") and "lower the learning rate" in line
    assert "run/last.safetensors (epoch 1) is the last good checkpoint" in line
    assert {name: (out / name).read_bytes() for name in good} == good


def test_budget_trainer_stops_a_diverging_trial() -> None:
    from effnet.catalog import get_spec
    from effnet.scaling import limit_stride
    from effnet.train.budget import Budget, load_arrays, train_spec

    spec = limit_stride(get_spec("efficientnet_b0", phi=-8.0), 8).replace(resolution=16)
    budget = Budget(epochs=1.0, train_images=256, eval_images=64, batch_size=32, lr=1e5)
    arrays = load_arrays("digits", budget)
    with pytest.raises(TrainingDiverged, match=r"budget training diverged at step \d+"):
        train_spec(spec, arrays, budget)


def test_folder_without_train_subfolder_trains_on_a_seeded_held_out_split(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(40):
            pixels = (rng.random((16, 16, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "data" / c / f"{i}.png")
    argv = ["train", "--data", str(tmp_path / "data"), "--epochs", "1", *TINY, "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "has no train/ sub-folder: training on 64 images and validating on a held-out 20% (16 images, " \
           "stratified, seed 0)" in err
