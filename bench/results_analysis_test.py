"""bench.results_analysis on hand-made outputs (bench.results_testing): the shortfalls found and
the run-to-run noise between two outputs."""

import pytest

from bench import results_analysis
from bench import results_testing as fixtures


def test_shortfalls_list_every_comparison_tfmot_wins_and_none_it_loses():
    found = results_analysis.shortfalls(
        [fixtures.frontier(), fixtures.combined(), fixtures.overhead()]
    )
    text = "\n".join(found)
    # Frontier, same allocation: tf-admm ahead at every ratio and twice as far: nothing.
    assert "same allocation" not in text
    # Best practice: tfmot:uniform (chosen on validation) ahead at 100x, as far, and faster.
    assert (
        "frontier (mnist, 40 epochs), best practice, 100x: tfmot:uniform -0.05 ± 0.00 points "
        "from dense against tf-admm -0.10 ± 0.07 (test, mean over 2 seeds)." in found
    )
    assert (
        "frontier (mnist, 40 epochs), best practice: within 0.1 point of dense, tfmot reaches "
        "100x and tf-admm 100x." in found
    )
    assert "best practice, 50x" not in text  # tfmot:uniform is better on test, not chosen.
    assert "wall time per point, median: tfmot 20 s, tf-admm 30 s (1.50x)" in text
    # Combined: tfmot_cluster has higher accuracy, a smaller converter file and less time.
    assert "tfmot prune + cluster test accuracy 98.95% against tf-admm's 98.90%" in text
    assert "tfmot prune + cluster converter (Optimize.DEFAULT) file, gzipped bytes 8,000" in text
    assert "tfmot prune + cluster wall time (s) 200 against tf-admm's 300" in text
    assert "weight-data ratio" not in text and "ratio with indices" not in text
    assert "PCQAT test accuracy" not in text
    # Overhead: tfmot's step is cheaper than ADMM's, not than retraining's; its state smaller.
    assert "tfmot 1.05x plain against tf-admm (admm) 1.12x" in text
    assert "(retrain)" not in text
    assert "added training state, tfmot 1,660 KiB against tf-admm 4,883 KiB" in text


def test_noise_reports_per_point_differences_and_differing_settings():
    first, second = fixtures.frontier(), fixtures.frontier(shift=0.001)
    second["settings"]["work_dir"] = "elsewhere"  # Where files go is no difference.
    result = results_analysis.noise(first, second)
    assert result["settings"] == {}
    assert len(result["points"]) == 18  # Per ratio, arm and seed.
    for _, measures in result["points"]:
        assert measures["accuracy"][2] == pytest.approx(0.001)
        assert measures["ratio"][2] == 0
    assert result["max_accuracy_points"] == pytest.approx(0.1)
    # A rerun of some of the points only is still a noise measure on those points.
    subset = fixtures.frontier(shift=0.001)
    subset["records"] = [r for r in subset["records"] if r["target_ratio"] == 50.0][:2]
    subset["settings"].update(ratios=[50.0], seeds=[0])
    result = results_analysis.noise(first, subset)
    assert result["settings"] == {}
    assert [key for key, _ in result["points"]] == [
        ("50x", "tf_admm:lamp", "seed 0"),
        ("50x", "tfmot:lamp", "seed 0"),
    ]
    combined_other = fixtures.combined(seed=1)
    assert results_analysis.noise(fixtures.combined(), combined_other)["settings"] == {
        "seed": (0, 1)
    }
