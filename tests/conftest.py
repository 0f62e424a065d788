"""Shared fixtures: a tiny spec for fast structural tests, fixed seeds, CPU only."""

from __future__ import annotations

import pytest

from effnet.threads import configure

# The CLI's threading policy for the in-process tests too (one thread and sleeping waits when other
# processes are busy): OpenMP reads its environment when torch loads, so it is set before the first
# `import torch` (docs/performance.md, "Threads under load").
configure()

import torch  # noqa: E402

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec  # noqa: E402

# Tests that took more than ~5 s on 2 cores (pytest --durations): `./run test --fast` (-m "not slow")
# skips them for the inner loop; CI and `./run test` run everything. One list here rather than a
# decorator per file, so that the inner loop's cost is visible and tuned in one place.
SLOW = {
    "test_macs_equal_measured_for_sampled_genomes", "test_two_nas_workers_on_a_real_postgresql_server",
    "test_two_workers_run_exactly_the_queued_slots_with_distinct_draws",
    "test_killed_worker_resumes_exactly_the_unfinished_slots", "test_pareto_search_with_nsga2_keeps_two_values",
    "test_real_search_writes_everything_and_a_rerun_resumes",
    "test_real_run_writes_everything_and_learns", "test_sigkill_and_resume_gives_identical_weights",
    "test_ddp_update_equals_single_process_on_concatenated_batches", "test_ddp_two_gloo_ranks_stay_identical",
    "test_bench_train_reports_each_variant_with_its_memory_estimate",
    "test_demo_pipeline_writes_a_report_with_real_pngs",
    "test_onnx_and_pt2_match_eager_with_a_dynamic_batch", "test_bf16_guard_reruns_near_ties_in_fp32",
    "test_fit_max_train_memory", "test_int8_needs_calibration_and_runs", "test_lite1_lite2_reach_the_reference",
    "test_two_workers_share_a_study_on_a_real_postgresql_server",
    "test_killed_worker_resumes_without_rerunning_finished_trials",
    "test_openvino_fp32_matches_eager", "test_openvino_bf16_keeps_top1_where_the_cpu_has_bf16",
    "test_auto_reports_every_candidate_with_its_figure", "test_a_cached_choice_is_reused_without_timing",
    "test_bf16_without_native_bf16_says_what_it_does_instead",
    "test_absurd_learning_rate_stops_with_step_and_cause_and_keeps_the_last_good_checkpoint",
    "test_budget_trainer_stops_a_diverging_trial",
    "test_folder_without_train_subfolder_trains_on_a_seeded_held_out_split",
    "test_every_mutated_input_is_accepted_or_refused_by_name", "test_hostile_header_refused_fast_and_small",
    "test_pipeline_equals_the_eager_path_on_real_photos", "test_workers_are_gone_after_ctrl_c",
    "test_draft_decoding_of_a_large_jpeg_gives_the_exact_size", "test_onnxruntime_engine_agrees_with_eager",
    "test_end_to_end_bench_reports_every_contender_with_ratios",
    "test_killed_sweep_resumes_without_retraining_finished_networks",
    "test_second_build_reuses_the_file_and_gives_the_same_outputs",
    "test_a_cached_file_that_fails_verification_is_evicted_and_rebuilt",
    "test_two_processes_fill_one_cache_and_a_third_reads_it",
    "test_workers_run_autograd_after_the_caller_did", "test_training_data_loader_workers_still_fork_after_autograd",
    "test_two_worker_latency_nas_and_the_training_pool_after_autograd",
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


@pytest.fixture(autouse=True)
def _engine_choice_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """optimize_for_inference's engine-choice cache in a fresh file, and its engine-file cache in a fresh
    folder, per test: never the user's ~/.cache, and no test sees another's engines."""
    monkeypatch.setenv("EFFNET_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache") / "choice.json"))
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path_factory.mktemp("effnet-cache")))
    monkeypatch.delenv("EFFNET_CACHE_MB", raising=False)
    monkeypatch.delenv("EFFNET_ENGINE", raising=False)
    # A quiet machine as far as the choice can tell: whether other work re-races a cached choice must
    # not depend on what else runs beside the suite (tests that need load set it themselves).
    import effnet.deploy.choice as choice

    monkeypatch.setattr(choice, "other_work", lambda: 0.0)


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
