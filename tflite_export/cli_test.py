"""The command line: flags, loading a saved model, JSON output."""

import json
import os

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

import tf_admm
from tflite_export import cli, exporter, flatbuffer
from tflite_export.testing import on_levels, prune, small_model


@pytest.fixture(autouse=True, scope="module")
def _parsed_flags():
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["tflite_export"])


def _saved(tmp_path, model):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return path


def test_run_exports_a_saved_model_and_writes_json(tmp_path):
    model = small_model("dense")
    kernel = model.get_layer("target").kernel
    kernel.assign(on_levels(prune(kernel.numpy(), 100), 4))
    out = str(tmp_path / "model.tflite")
    json_path = str(tmp_path / "report.json")
    report = cli.run(_saved(tmp_path, model), out, json_path=json_path)
    assert os.path.getsize(out) == report.file_bytes
    with open(json_path, encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["file_bytes"] == report.file_bytes
    assert {w["label"]: w["encoding"] for w in saved["weights"]}["target"] == "sparse_levels"


def test_run_exports_a_keras3_file(tmp_path):
    import keras as keras3  # noqa: PLC0415 (Keras 3 beside the tf_keras test models)

    inputs = keras3.Input((24,))
    model = keras3.Model(inputs, keras3.layers.Dense(10, name="target")(inputs))
    kernel = model.get_layer("target").kernel
    kernel.assign(prune(np.asarray(kernel), 100))
    path = str(tmp_path / "keras3.keras")
    model.save(path)
    report = cli.run(path, str(tmp_path / "model.tflite"))
    assert [w.nonzeros for w in report.weights] == [int(np.count_nonzero(kernel))]
    assert os.path.getsize(tmp_path / "model.tflite") == report.file_bytes


def test_main_prints_the_tables(tmp_path, capsys):
    model_path = _saved(tmp_path, small_model("dense"))
    data_path = str(tmp_path / "inputs.npy")
    np.save(data_path, np.ones((2, 24), np.float32))
    out = str(tmp_path / "m.tflite")
    with flagsaver.flagsaver(
        model=model_path,
        out=out,
        encoding="float32",
        layer_encoding=["target=int8"],
        representative_data=data_path,
        activations=exporter.Activations.FLOAT32,  # the samples only verify
    ):
        cli.main(["tflite_export"])
    printed = capsys.readouterr().out
    assert "flatbuffer overhead" in printed and "int8" in printed
    assert os.path.exists(out)


def test_tensor_names_io_drops_internal_names_and_says_so(tmp_path, capsys):
    out = str(tmp_path / "m.tflite")
    with flagsaver.flagsaver(
        model=_saved(tmp_path, small_model("conv2d")), out=out, tensor_names="io"
    ):
        cli.main(["tflite_export"])
    printed = capsys.readouterr().out
    assert "note: tensor_names='io': 7 internal tensor names dropped" in printed
    with open(out, "rb") as handle:
        tensors = flatbuffer.read_model(handle.read()).subgraphs[0].tensors
    names = [flatbuffer.tensor_name(tensor) for tensor in tensors]
    assert names[0] == "serving_default_image:0" and names[-1] == "StatefulPartitionedCall:0"
    assert set(names[1:-1]) == {""}


def test_main_rejects_stray_arguments_and_bad_layer_encodings(tmp_path):
    with flagsaver.flagsaver(model="m.keras", out="m.tflite"):
        with pytest.raises(app.UsageError, match="positional"):
            cli.main(["tflite_export", "extra"])
    with flagsaver.flagsaver(model="m.keras", out="m.tflite", layer_encoding=["target"]):
        with pytest.raises(app.UsageError, match="LAYER=ENCODING"):
            cli.main(["tflite_export"])
    with flagsaver.flagsaver(out="m.tflite"):
        with pytest.raises(app.UsageError, match="--model and --out"):
            cli.main(["tflite_export"])


def test_wrapped_model_needs_strip(tmp_path):
    spec = tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5))
    model_path = _saved(tmp_path, tf_admm.admm_wrap(small_model("dense"), spec))
    out = str(tmp_path / "m.tflite")
    with pytest.raises(exporter.ExportError, match=r"tf_admm\.strip"):
        cli.run(model_path, out)
    report = cli.run(model_path, out, strip=True)
    assert all(check.passed for check in report.checks)


def test_missing_model_file_is_refused(tmp_path):
    with pytest.raises(exporter.ExportError, match="does not exist"):
        cli.run(str(tmp_path / "nope.keras"), str(tmp_path / "m.tflite"))


def test_main_exports_for_tflite_micro(tmp_path, capsys):
    pytest.importorskip(
        "tflite_micro",
        reason="needs tflite-micro, the optional [tflm] extra: pip install -e '.[tflm]'",
    )
    model = small_model("dense")
    kernel = model.get_layer("target").kernel
    kernel.assign(on_levels(kernel.numpy(), 3))  # 8 distinct values: 3-bit indices
    out = str(tmp_path / "m.tflite")
    with flagsaver.flagsaver(model=_saved(tmp_path, model), out=out, target="tflm"):
        cli.main(["tflite_export"])
    printed = capsys.readouterr().out
    assert "(tflm, verified with tflite_micro" in printed
    assert "lut indices 3-bit" in printed
    assert "tflm vs uncompressed file: head: max|diff|=0 " in printed


def test_representative_data_gives_a_full_integer_file(tmp_path, capsys):
    model = small_model("dense")
    kernel = model.get_layer("target").kernel
    kernel.assign(on_levels(kernel.numpy(), 3))
    data_path = str(tmp_path / "samples.npy")
    np.save(data_path, np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32))
    out = str(tmp_path / "int8.tflite")
    with flagsaver.flagsaver(model=_saved(tmp_path, model), out=out, representative_data=data_path):
        cli.main(["tflite_export"])
    printed = capsys.readouterr().out
    assert "(litert, int8, verified with" in printed
    assert "int4 codes = level indices" in printed
    assert "intended int8 weights (read from the interpreter)" in printed
    assert os.path.exists(out)


def test_a_missing_representative_data_file_is_a_usage_error(tmp_path):
    with flagsaver.flagsaver(
        model="m.keras", out="m.tflite", representative_data=str(tmp_path / "none.npy")
    ):
        with pytest.raises(app.UsageError, match="--representative_data"):
            cli.main(["tflite_export"])
