"""Tests for recipes.mobilenet_fashion_mnist: a tiny run end to end on random images (one epoch
of each phase, a few timed invokes), its files and results, and the settings it refuses."""

import json
import os

import numpy as np
import pytest
from absl import app, flags

import tf_admm
from recipes import mobilenet_fashion_mnist as recipe
from recipes import mobilenet_files, models
from tf_admm.compat import keras
from tflite_export import flatbuffer, verify


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    settings = recipe.Settings(
        model_dir=str(tmp_path_factory.mktemp("mobilenet")),
        sparsity=0.5,
        pretrain_epochs=1,
        admm_epochs=1,
        retrain_epochs=1,
        update_every=2,
        batch_size=32,
        synthetic_examples=64,
        rounds=2,
        invokes_per_round=5,
        warmup=2,
        verbose=0,
    )
    return settings, recipe.run(settings)


def _files(results):
    return {entry["name"]: entry for entry in results["files"]}


def test_shrunk_model_keeps_half_of_every_convolutions_filters_tied_by_residuals(tiny):
    _, results = tiny
    dense, shrunk = results["channels"]["dense"], results["channels"]["shrunk"]
    assert results["channel_groups"] == [["project2", "project3"], ["project4", "project5"]]
    # Width 1: models.MOBILENET_FASHION_BLOCKS; half of each plain convolution's filters go.
    assert dense["stem"] == 32 and dense["expand2"] == 96 and dense["head"] == 128
    for name, count in dense.items():
        if name.startswith("depthwise"):
            continue  # Its channels follow its input's.
        assert shrunk[name] == (10 if name == "classifier" else count // 2), name
    assert shrunk["project2"] == shrunk["project3"] == 12
    assert shrunk["depthwise1"] == shrunk["stem"] == 16
    assert shrunk["depthwise2"] == shrunk["expand2"] == 48
    assert results["shrink_max_abs_error"] <= recipe.SHRINK_TOLERANCE


def test_exported_shrunk_file_gives_the_saved_keras_models_outputs(tiny):
    settings, results = tiny
    small = keras.models.load_model(os.path.join(settings.model_dir, "mobilenet_shrunk.keras"))
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    with open(_files(results)["shrunk"]["path"], "rb") as f:
        contents = f.read()
    for runtime in (verify.Runtime.DEFAULT_DELEGATE, verify.Runtime.BUILTIN):
        (outputs,) = verify.run(contents, [images], runtime=runtime)
        np.testing.assert_allclose(outputs, small(images).numpy(), rtol=1e-4, atol=1e-4)
    # Exported with tensor_names="io": only the input and the output keep their names.
    interpreter = verify.litert_interpreter(contents, verify.Runtime.BUILTIN)
    io_names = {
        d["name"] for d in interpreter.get_input_details() + interpreter.get_output_details()
    }
    tensors = flatbuffer.read_model(contents).subgraphs[0].tensors
    assert {flatbuffer.tensor_name(t) for t in tensors} == io_names | {""}


def test_results_json_has_every_field_and_ratios_against_the_dense_file(tiny):
    settings, results = tiny
    with open(os.path.join(settings.model_dir, "results.json")) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(results))
    assert {"accuracy", "files", "acceptance", "channels", "spec", "seconds", "run"} <= set(written)
    files = _files(written)
    assert list(files) == ["dense", "shrunk", "shrunk_int8", "tfmot_2of4"]
    dense = files["dense"]
    for entry in files.values():
        assert entry["file_bytes"] == os.path.getsize(entry["path"])
        assert entry["x_smaller"] == pytest.approx(dense["file_bytes"] / entry["file_bytes"])
        assert entry["x_fewer_macs"] == pytest.approx(dense["macs"] / entry["macs"])
        assert [row["threads"] for row in entry["latency"]] == [1, 2]
        for row, reference in zip(entry["latency"], dense["latency"]):
            assert row["invokes"] == settings.rounds * settings.invokes_per_round
            assert row["x_faster"] == pytest.approx(reference["median_us"] / row["median_us"])
            assert "samples_us" not in row
    assert files["shrunk"]["macs"] < dense["macs"] / 3
    assert files["shrunk"]["file_bytes"] < dense["file_bytes"] / 2
    assert files["shrunk_int8"]["file_bytes"] < files["shrunk"]["file_bytes"]
    # The float file computes what Keras does.
    assert files["shrunk"]["litert_test_accuracy"] == pytest.approx(
        written["accuracy"]["shrunk"]["test"]
    )
    assert files["tfmot_2of4"]["nonzero_params"] < dense["nonzero_params"]
    verdicts = {verdict["file"]: verdict for verdict in written["acceptance"]}
    assert set(verdicts) == {"shrunk", "shrunk_int8"}
    for name, verdict in verdicts.items():
        one_thread = files[name]["latency"][0]
        assert verdict["x_faster_1_thread"] == one_thread["x_faster"]
        assert verdict["x_smaller"] == files[name]["x_smaller"]
    assert written["spec"]["update_unit"] == "step"


def test_printed_table_names_every_file_and_verdict(tiny, capsys):
    _, results = tiny
    text = mobilenet_files.format_results(results)
    for name in ("dense", "shrunk", "shrunk_int8", "tfmot_2of4"):
        assert f"\n{name} " in text
    assert "1 thr x faster" in text and "2 thr µs" in text
    assert text.count("needs 2") == 2


def test_tfmot_2of4_prunes_the_plain_convolutions_and_dense_layers_not_the_depthwise(tiny):
    _, results = tiny
    pruned = set(_files(results)["tfmot_2of4"]["pruned_layers"])
    assert {"stem", "expand2", "project5", "head", "classifier"} <= pruned
    assert not any(name.startswith("depthwise") for name in pruned)


def test_compression_spec_counts_rounds_in_steps_and_clips_the_update_interval():
    settings = recipe.Settings(model_dir="unused", admm_epochs=3, update_every=100)
    spec = recipe.compression_spec(settings, steps_per_epoch=430)
    assert spec.update_every == 100 and spec.admm_rounds == 12
    (rule,) = spec.rules
    assert rule.structure == "filter" and rule.sparsity == settings.sparsity
    assert spec.rho.initial * spec.rho.multiplier ** (spec.admm_rounds - 1) == pytest.approx(
        settings.rho * settings.rho_growth
    )
    tiny_spec = recipe.compression_spec(settings, steps_per_epoch=4)
    assert tiny_spec.update_every == 4 and tiny_spec.admm_rounds == 3
    quantized = recipe.compression_spec(
        recipe.Settings(model_dir="unused", bits=8), 10, models.mobilenet_fashion()
    )
    # At 60%, the stem keeps 13 of its 32 3x3x1 filters (117 weights) and project1 6 of its
    # 16 1x1x32 ones (192): fewer than 8 bits' 256 levels.
    assert [(rule.name, rule.bits) for rule in quantized.rules] == [
        ("stem", None),
        ("project1", None),
        (None, 8),
    ]
    assert quantized.quantizes


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sparsity": 1.0}, "received: sparsity=1.0"),
        ({"sparsity": 0.0}, "received: sparsity=0.0"),
        ({"width": 0}, "received: width=0"),
        ({"bits": 1}, "received: bits=1"),
        ({"admm_epochs": 0}, "received: admm_epochs=0"),
        ({"tfmot_epochs": -1}, "received: tfmot_epochs=-1"),
        ({"threads": ()}, "received: threads=()"),
        ({"validation_examples": 0}, "received: validation_examples=0"),
        ({"rho_growth": 0.5}, "received: rho_growth=0.5"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=f"Expected .*; {message}"):
        recipe.Settings(model_dir="unused", **overrides)


def _parse(argv):
    flag_values = flags.FlagValues()
    holders = recipe.define_flags(flag_values)
    flag_values(["recipe", *argv])
    return holders


def test_flags_give_the_settings_defaults_and_bad_ones_are_usage_errors():
    settings = recipe.settings_from_flags(_parse(["--model_dir=runs/x"]))
    assert settings == recipe.Settings(model_dir="runs/x")
    changed = recipe.settings_from_flags(_parse(["--sparsity=0.7", "--threads=1", "--noint8"]))
    assert changed.sparsity == 0.7 and changed.threads == (1,) and not changed.int8
    with pytest.raises(app.UsageError, match="received: sparsity=1.5"):
        recipe.settings_from_flags(_parse(["--sparsity=1.5"]))
    with pytest.raises(app.UsageError, match="invalid literal"):
        recipe.settings_from_flags(_parse(["--threads=one"]))


def test_main_rejects_stray_arguments():
    with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
        recipe.main_for(None)(["mobilenet_fashion_mnist", "extra"])


def test_channel_groups_of_the_model_are_the_residual_partners():
    groups = tf_admm.channel_groups(models.mobilenet_fashion(width_multiplier=0.5))
    assert [group.members for group in groups] == [
        ("project2", "project3"),
        ("project4", "project5"),
    ]
