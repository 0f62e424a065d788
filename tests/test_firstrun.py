"""The first five minutes: --version, the threading setting, path checks before torch loads, and
where ``export`` and ``cam`` write (README "Command line", docs/performance.md "Threads under load")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from PIL import Image

import effnet
from effnet.cli import main
from effnet.cli.preflight import BUILTIN_DATA, cam_outputs, export_prefix
from effnet.errors import EffnetError
from effnet.threads import BUSY_CORES, THREADS_ENV, WAIT_POLICY, configure, other_cpu_use, resolve_threads

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"effnet {effnet.__version__}" == f"effnet {declared}"


def test_threads_flag_beats_env_beats_default():
    assert resolve_threads(None, {}) == (None, "default")
    assert resolve_threads(None, {THREADS_ENV: " 3 "}) == (3, f"${THREADS_ENV}")
    assert resolve_threads(1, {THREADS_ENV: "3"}) == (1, "--threads")


@pytest.mark.parametrize("flag,env,named", [(0, {}, "--threads"), (None, {THREADS_ENV: "two"}, THREADS_ENV),
                                            (None, {THREADS_ENV: "-1"}, THREADS_ENV)])
def test_bad_thread_counts_are_one_line_errors(flag, env, named):
    with pytest.raises(EffnetError, match=named):
        resolve_threads(flag, env)


def test_idle_machine_keeps_torchs_default():
    env: dict[str, str] = {}
    s = configure(None, env, busy_cores=0.1)
    assert env == {} and (s.threads, s.source, s.wait_policy) == (None, "default", "")
    s = configure(None, env := {THREADS_ENV: "2"}, busy_cores=0.0)
    assert env == {THREADS_ENV: "2", "OMP_NUM_THREADS": "2"} and s.source == f"${THREADS_ENV}"


def test_busy_machine_gets_one_thread_and_sleeping_waits():
    env: dict[str, str] = {}
    s = configure(None, env, busy_cores=1.0)
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": WAIT_POLICY}
    assert (s.threads, s.source, s.wait_policy, s.busy_cores) == (1, "busy machine", WAIT_POLICY, 1.0)
    env = {}
    assert configure(2, env, busy_cores=1.0).threads == 2  # the user's count stands; its threads sleep
    assert env == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": WAIT_POLICY}


def test_the_users_own_openmp_settings_are_kept():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    s = configure(None, env, busy_cores=1.0)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"} and s.wait_policy == "ACTIVE"
    env = {"OMP_NUM_THREADS": "3"}
    s = configure(None, env, busy_cores=1.0)
    assert env == {"OMP_NUM_THREADS": "3"} and s.source == "$OMP_NUM_THREADS"


def test_a_busy_loop_beside_us_is_seen_as_a_busy_machine(tmp_path):
    """Holds under any load: with our own busy loop running, others use at least that loop's share."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        used = other_cpu_use(0.5)
    finally:
        hog.kill()
        hog.wait()
    if used is None:
        pytest.skip("no /proc/stat on this system")
    assert used >= BUSY_CORES
    assert other_cpu_use(0.01, stat=tmp_path / "missing") is None


def test_torch_started_after_configure_uses_the_setting():
    """The OpenMP runtime reads the environment when torch loads: a fresh interpreter shows it took."""
    code = ("import os; from effnet.threads import configure; configure(); import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")
    env = {**CHILD_ENV, THREADS_ENV: "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_missing_paths_fail_before_torch_is_imported(tmp_path):
    """Each command's path arguments are checked first: one error line, exit 2, and torch never loaded."""
    cases = [
        ["eval", "--model", "efficientnet_lite0", "--pretrained", "--data", str(tmp_path / "nope")],
        ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")],
        ["finetune", "--model", "efficientnet_lite0", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
        ["predict", str(tmp_path / "cat.jpg"), "--model", "efficientnet_lite0", "--pretrained"],
        ["cam", str(tmp_path / "cat.jpg"), "--model", "efficientnet_lite0", "--pretrained"],
        ["eval", "--checkpoint", str(tmp_path / "x.safetensors"), "--data", "digits"],
        ["bench", "efficientnet_lite0", "--dtype", "int8", "--calibration", str(tmp_path / "imgs")],
        ["train", "-c", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "run")],
    ]
    code = ("import json, sys, contextlib, io\nfrom effnet.cli import main\nres = []\n"
            f"for argv in {cases!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        rc = main(argv)\n"
            "    res.append([rc, err.getvalue()])\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'results': res}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True, text=True, timeout=120,
                         check=True)
    got = json.loads(out.stdout)
    assert got["torch"] is False
    for argv, (rc, err) in zip(cases, got["results"], strict=True):
        assert rc == 2 and err.startswith("effnet: error:") and len(err.strip().splitlines()) == 1, (argv, err)
        assert "nope" in err or "cat.jpg" in err or "x.safetensors" in err or "imgs" in err or "x.yaml" in err


def test_preflight_knows_the_same_builtin_data_sets_as_the_data_layer():
    from effnet.data import BUILTIN_DATASETS

    assert tuple(BUILTIN_DATA) == tuple(BUILTIN_DATASETS)


def test_export_out_is_a_folder_and_the_old_prefix_form_still_works(tmp_path, capsys):
    assert export_prefix(str(tmp_path / "exp"), "efficientnet_b0") == tmp_path / "exp" / "efficientnet_b0"
    assert (tmp_path / "exp").is_dir()
    assert export_prefix(str(tmp_path / "old" / "b0.onnx"), "efficientnet_b0") == tmp_path / "old" / "b0"
    assert "--out takes a folder now" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(EffnetError, match="is a file"):
        export_prefix(str(tmp_path / "file"), "efficientnet_b0")


def _image_folder(root: Path) -> Path:
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / cls / f"{cls}1.png")
    return root / "cats" / "cats1.png"


def test_cam_writes_into_the_current_folder_or_out(tmp_path, monkeypatch):
    image = _image_folder(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cam_outputs(str(image), None, "cam") == (work / "cats1.cam.png", work / "cats1.cam.npy")
    assert cam_outputs(str(image), str(tmp_path / "maps"), "gradcam")[0] == tmp_path / "maps" / "cats1.gradcam.png"
    assert (tmp_path / "maps").is_dir()
    assert cam_outputs(str(image), str(tmp_path / "data"), "cam")[0].parent == tmp_path / "data"  # the root: not read


def test_cam_refuses_to_write_inside_the_image_folder_it_reads(tmp_path, monkeypatch, capsys):
    image = _image_folder(tmp_path / "data")
    monkeypatch.chdir(image.parent)  # the default (current folder) is a class folder
    assert main(["cam", str(image), "--model", "efficientnet_lite0", "--pretrained"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effnet: error:") and "--out" in err and "inside the image folder" in err
    assert main(["cam", str(image), "--model", "efficientnet_lite0", "--pretrained",
                 "--out", str(tmp_path / "data" / "dogs")]) == 2
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == ["cats", "cats1.png", "dogs", "dogs1.png"]


def test_a_photo_outside_any_image_folder_may_get_its_map_beside_it(tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()  # a sub-folder: this folder is not a class folder
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    assert cam_outputs("photo.jpg", None, "cam")[0] == tmp_path / "photo.cam.png"


def test_shared_data_env_points_at_the_synsets_file(tmp_path, monkeypatch):
    from effnet.data import IMAGENET_SYNSETS_ENV, find_imagenet_synsets

    (tmp_path / "imagenet-synsets.txt").write_text("n01440764 tench\n")
    monkeypatch.delenv(IMAGENET_SYNSETS_ENV, raising=False)
    monkeypatch.setenv("EFFNET_SHARED_DATA", str(tmp_path))
    assert find_imagenet_synsets() == tmp_path / "imagenet-synsets.txt"


def test_a_folder_whose_siblings_hold_no_images_is_no_image_folder(tmp_path, monkeypatch):
    (tmp_path / "album").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path / "album" / "a.png")
    monkeypatch.chdir(tmp_path / "album")
    assert cam_outputs("a.png", None, "gradcam")[0] == tmp_path / "album" / "a.gradcam.png"
