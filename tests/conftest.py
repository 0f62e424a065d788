"""Shared fixtures: a tiny spec for fast structural tests, fixed seeds, CPU only."""

from __future__ import annotations

import pytest
import torch

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec

# Tests that took more than ~5 s on 2 cores (pytest --durations): `./run test --fast` (-m "not slow")
# skips them for the inner loop; CI and `./run test` run everything. One list here rather than a
# decorator per file, so that the inner loop's cost is visible and tuned in one place.
SLOW = {
    "test_real_run_writes_everything_and_learns", "test_sigkill_and_resume_gives_identical_weights",
    "test_ddp_update_equals_single_process_on_concatenated_batches", "test_ddp_two_gloo_ranks_stay_identical",
    "test_bench_train_reports_each_variant_with_its_memory_estimate",
    "test_demo_pipeline_writes_a_report_with_real_pngs",
    "test_onnx_and_pt2_match_eager_with_a_dynamic_batch", "test_bf16_guard_reruns_near_ties_in_fp32",
    "test_fit_max_train_memory", "test_int8_needs_calibration_and_runs", "test_lite1_lite2_reach_the_reference",
    "test_two_workers_share_a_study_on_a_real_postgresql_server",
    "test_killed_worker_resumes_without_rerunning_finished_trials",
    "test_killed_sweep_resumes_without_retraining_finished_networks",
}
SLOW_MODELS = ("efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8",
               "efficientnet_l2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        big = name == "test_forward_backward_every_model" and any(m in item.name for m in SLOW_MODELS)
        if name in SLOW or big:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_spec() -> NetworkSpec:
    """Three MBConv stages, 8–16 channels, 32 px: everything that needs a real net but not a real size."""
    return NetworkSpec(
        name="tiny",
        stem=StemSpec(out_channels=8),
        stages=(
            StageSpec(block="mbconv", repeats=1, out_channels=8, stride=1, expand_ratio=1, se_ratio=0.25),
            StageSpec(block="mbconv", repeats=2, out_channels=16, stride=2, expand_ratio=4, se_ratio=0.25,
                      kernel_size=5),
            StageSpec(block="mbconv", repeats=1, out_channels=16, stride=2, expand_ratio=4, se_ratio=0.25),
        ),
        head=HeadSpec(channels=32),
        resolution=32,
    )
