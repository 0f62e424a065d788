"""The CLI in-process: outputs, JSON, plots, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from effnet.cli.app import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_every_model_with_paper_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "efficientnet_b7" in out and "66,347,960" in out and "resnet50" in out
    assert "6.21/7.27/7.05" in out  # B7's implied φ per dimension
    code, out, _ = run(capsys, "models", "efficientnet_b*", "--json")
    data = json.loads(out)
    assert [d["name"] for d in data][:2] == ["efficientnet_b0", "efficientnet_b1"]
    assert data[0]["paper"]["top1"] == 77.1


def test_describe(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "efficientnet_b0", "--phi", "1")
    assert code == 0 and "258x258" in out and "9,109,994" in out and "stage7" in out
    code, out, _ = run(capsys, "describe", "resnet50", "--depth", "2", "--width", "1.5", "--json")
    spec = json.loads(out)["spec"]
    assert [s["repeats"] for s in spec["stages"]] == [6, 8, 12, 6]
    assert spec["stages"][0]["out_channels"] == 384


def test_scale_table_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "scale.png"
    code, out, _ = run(capsys, "scale", "efficientnet_b0", "--phi", "0:3", "--plot", str(png))
    assert code == 0 and "+34.0%" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    code, out, _ = run(capsys, "scale", "mobilenetv2", "--phi", "0,1.5", "--json")
    assert [r["phi"] for r in json.loads(out)] == [0.0, 1.5]


def test_scale_table3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scale", "--table3")
    assert code == 0
    assert "compound d=1.4 w=1.2 r=1.3" in out and out.count("resnet50") == 5


def test_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fit", "efficientnet_b0", "--max-macs", "1.5G", "--json")
    r = json.loads(out)
    assert code == 0 and r["macs"] <= 1.5e9 < r["next_macs"]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["describe", "efficientnet_b9"], "did you mean efficientnet_b8"),
    (["describe", "efficientnet_b0", "--phi", "-40"], "smallest valid phi"),
    (["describe", "efficientnet_b0", "--width", "0"], "width multiplier=0.0"),
    (["describe", "efficientnet_b0", "--width", "-1"], "width multiplier=-1.0"),
    (["describe", "efficientnet_b0", "--alpha", "0"], "alpha=0.0"),
    (["scale", "resnet50", "--gamma", "0.95"], "gamma=0.95 is below 1"),
    (["scale", "resnet50", "--alpha", "2", "--beta", "2"], "not within 0.1 of the target"),
    (["scale", "--phi", "0:"], "malformed"),
    (["scale", "--phi", "5:1"], "STOP >= START"),
    (["scale", "--phi", "0:7:0"], "STEP > 0"),
    (["fit", "resnet50", "--max-macs", "lots"], "not a number"),
    (["fit", "resnet50"], "give a budget"),
    (["models", "nothing_like_it"], "unknown model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("effnet: error: ") and "Traceback" not in err


def test_allow_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "scale", "resnet50", "--phi", "1", "--beta", "0.95", "--alpha", "1.5",
                     "--gamma", "1.2", "--allow-below-one")
    assert code == 0


def test_console_script_and_module_entry_points() -> None:
    r = subprocess.run([sys.executable, "-m", "effnet", "describe", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown model" in r.stderr and "Traceback" not in r.stderr


def test_warnings_name_effnet_once() -> None:
    """Library warnings start with "effnet: " for API users; the CLI's one-line form adds its own."""
    from effnet.cli.app import _format_warning

    assert _format_warning(UserWarning("effnet: SE-gate plans disabled"), UserWarning) == \
        "effnet: warning: SE-gate plans disabled\n"
    assert _format_warning(UserWarning("warmup shortened"), UserWarning) == "effnet: warning: warmup shortened\n"
