"""Tests for the bit-level storage accounting: hand-checked numbers, a brute-force encoder, and
the published LeNet-5 figures of Deep Compression and Ye et al. 2018."""

import dataclasses
import json
import math

import numpy as np
import pytest

from tf_admm.storage import (
    BASELINE_BITS,
    LayerStorage,
    StorageError,
    StorageReport,
    best_index_bits,
    codebook_size_bits,
    count_fillers,
    fillers_by_index_bits,
    format_bits,
    format_report,
    layer_storage,
    relative_gaps,
    relative_index_cost,
    storage_report,
)
from tf_admm.testing import random_positions


def _mask(num_weights, num_nonzeros, seed):
    mask = np.zeros(num_weights, dtype=np.float32)
    mask[random_positions(num_weights, num_nonzeros, seed)] = 1.0
    return mask


# --- 1. Hand-checked example -------------------------------------------------------------------


def test_hand_checked_tiny_layer_exact_bits():
    # n = 40 weights, nonzeros at flat positions 0, 3, 4, 20, 39; b = 2 bits, p = 3 bits.
    # gaps g (first from -1):   1, 3, 1, 16, 19
    # zeros skipped g - 1:      0, 2, 0, 15, 18
    # fillers (g - 1) // 2**3:  0, 0, 0,  1,  2   -> 3 fillers (at positions 12, 28, 36)
    # entries: 5 + 3 = 8; value bits 8 * 2 = 16; index bits 8 * 3 = 24; total 40.
    # weight data: 5 * 2 = 10 bits -> 32 * 40 / 10 = 128x; with indices 32 * 40 / 40 = 32x.
    positions = [0, 3, 4, 20, 39]
    assert relative_gaps(positions).tolist() == [1, 3, 1, 16, 19]
    assert count_fillers(positions, index_bits=3) == 3
    cost = relative_index_cost(positions, index_bits=3, bits_per_value=2)
    assert (cost.num_entries, cost.value_bits, cost.index_bits, cost.total_bits) == (8, 16, 24, 40)

    layer = layer_storage(
        "tiny", positions=positions, num_weights=40, bits_per_value=2, index_bits=3
    )
    assert layer.num_fillers == 3
    assert (layer.value_bits, layer.index_bits, layer.weight_data_bits, layer.total_bits) == (
        16,
        24,
        10,
        40,
    )
    report = storage_report([layer])
    assert report.weight_data_ratio == 128.0
    assert report.ratio_with_indices == 32.0
    assert report.pruning_ratio == 8.0  # 40 / 5


def test_hand_checked_best_index_bits():
    # Same positions, b = 2. Zeros skipped: 0, 2, 0, 15, 18.
    # p=1: F = 0+1+0+7+9 = 17 -> (5+17) * 3 = 66 bits
    # p=2: F = 0+0+0+3+4 = 7  -> (5+7)  * 4 = 48
    # p=3: F = 3              -> 8 * 5      = 40
    # p=4: F = 0+1 = 1        -> 6 * 6      = 36
    # p=5: F = 0              -> 5 * 7      = 35   <- best
    # p=6: F = 0              -> 5 * 8      = 40
    positions = [0, 3, 4, 20, 39]
    assert fillers_by_index_bits(positions, max_index_bits=6) == {
        1: 17,
        2: 7,
        3: 3,
        4: 1,
        5: 0,
        6: 0,
    }
    assert best_index_bits(positions, bits_per_value=2) == 5
    layer = layer_storage("tiny", positions=positions, num_weights=40, bits_per_value=2)
    assert (layer.index_bits_per_entry, layer.num_fillers, layer.total_bits) == (5, 0, 35)


def test_hand_checked_codebook_and_dense_layers():
    # sparse: 1 nonzero at position 1 of 4, b=2, p=2 -> 1 * (2 + 2) = 4 bits, codebook 4 * 32.
    # dense: 4 weights * 32 bits = 128 bits, nothing else.
    sparse = layer_storage(
        "a",
        weights=np.array([0.0, 0.5, 0.0, 0.0]),
        bits_per_value=2,
        index_bits=2,
        codebook_bits=codebook_size_bits(4),
    )
    dense = layer_storage("b", weights=np.ones((2, 2)), sparse=False)
    assert (sparse.total_bits, sparse.weight_data_bits) == (4 + 128, 2 + 128)
    assert (dense.total_bits, dense.weight_data_bits, dense.index_bits) == (128, 128, 0)
    assert dense.index_bits_per_entry == 0 and dense.num_entries == 4
    report = storage_report([sparse, dense])
    assert report.total_bits == 260
    assert report.weight_data_ratio == pytest.approx(32 * 8 / 258)
    assert report.ratio_with_indices == pytest.approx(32 * 8 / 260)
    assert report.pruning_ratio == pytest.approx(8 / 5)


def test_empty_layer_costs_only_its_codebook():
    layer = layer_storage("empty", weights=np.zeros(10), bits_per_value=3, codebook_bits=32)
    assert (layer.num_nonzeros, layer.num_fillers, layer.index_bits_per_entry) == (0, 0, 1)
    assert layer.total_bits == 32
    report = storage_report([layer_storage("zero", weights=np.zeros(10), bits_per_value=3)])
    assert math.isinf(report.ratio_with_indices) and math.isinf(report.pruning_ratio)
    assert report.to_dict()["totals"]["ratio_with_indices"] is None
    assert "inf" in format_report(report)


def test_weights_and_positions_inputs_agree_and_use_c_order():
    weights = np.zeros((3, 4))
    weights[0, 3] = 1.0  # flat 3
    weights[2, 1] = -2.0  # flat 9
    from_weights = layer_storage("l", weights=weights, bits_per_value=4, index_bits=2)
    from_positions = layer_storage(
        "l", positions=[3, 9], num_weights=12, bits_per_value=4, index_bits=2
    )
    assert from_weights == from_positions
    # zeros skipped 3 and 5 with p=2 -> fillers 3 // 4 + 5 // 4 = 0 + 1
    assert from_weights.num_fillers == 1


# --- 2. The chosen p is the argmin --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bits_per_value", [1, 3, 8, 32])
def test_chosen_index_bits_is_argmin_over_search_range(seed, bits_per_value):
    rng = np.random.default_rng(100 + seed)
    num_weights = 20_000
    density = float(rng.choice([0.001, 0.02, 0.1, 0.5]))
    positions = random_positions(num_weights, int(density * num_weights), seed)
    totals = {
        p: relative_index_cost(positions, index_bits=p, bits_per_value=bits_per_value).total_bits
        for p in range(1, 17)
    }
    best = min(totals, key=lambda p: (totals[p], p))
    assert best_index_bits(positions, bits_per_value) == best
    layer = layer_storage(
        "l", positions=positions, num_weights=num_weights, bits_per_value=bits_per_value
    )
    assert layer.index_bits_per_entry == best
    assert layer.total_bits == totals[best] == min(totals.values())


# --- 3. Deep Compression's published LeNet-5 numbers --------------------------------------------

# Han, Mao & Dally 2016, "Deep Compression", Table 2 (LeNet-5 on MNIST). The search tool did not
# return the table text, so these are the values as we remember them from the paper (the text's
# "8 bits for conv, 5 bits for fc" and 5-bit relative indices for LeNet-5 are certain; the
# per-layer rates below should be re-checked against the PDF):
#   layer  #weights  weights kept (P)  weight bits (P+Q)  index bits (P+Q)  compress rate (P+Q)
#   conv1     0.5K         66%               8                  5                78.5%
#   conv2      25K         12%               8                  5                 6.0%
#   ip1       400K          8%               5                  5                 2.7%
#   ip2         5K         19%               5                  5                 6.9%
#   total     431K          8%                                                    3.05% (33x)
# "Compress rate" is compressed size / 32-bit size; the P+Q+H column (39x) adds Huffman coding,
# which we do not model. They count the codebook (2**b shared 32-bit floats per layer).
DEEP_COMPRESSION_LENET5 = [
    # name, weights, kept fraction, weight bits, published P+Q compress rate
    ("conv1", 500, 0.66, 8, 0.785),
    ("conv2", 25_000, 0.12, 8, 0.060),
    ("ip1", 400_000, 0.08, 5, 0.027),
    ("ip2", 5_000, 0.19, 5, 0.069),
]
DEEP_COMPRESSION_LENET5_TOTAL_RATE = 0.0305


def _deep_compression_layers(index_bits):
    return [
        layer_storage(
            name,
            weights=_mask(n, round(n * kept), seed),
            bits_per_value=bits,
            codebook_bits=codebook_size_bits(2**bits),
            index_bits=index_bits,
        )
        for seed, (name, n, kept, bits, _) in enumerate(DEEP_COMPRESSION_LENET5)
    ]


def test_deep_compression_lenet5_pq_rates_reproduced():
    # With their fixed 5-bit indices, random masks with their kept fractions and 2**b-entry
    # codebooks we measured (seeds 0..3):
    #   conv1 78.0% (paper 78.5%), conv2 5.99% (6.0%), ip1 2.69% (2.7%), ip2 6.58% (6.9%),
    #   total 3.02% = 33.1x (3.05% = 32.8x).
    # Remaining differences: kept fractions are published rounded to whole percents (ip2's
    # "19%" may be 18.5-19.5%; ip1's "8%" alone moves its rate by up to +-6%), their masks come
    # from training, not uniform sampling (so their gaps, hence fillers, differ), and their
    # total (431K) may include biases. Hence 6% per layer; the total is held tighter (4%) since
    # it is also an average over layers. Without fillers the total would be 2.84% (7% off) and
    # without codebooks conv1 would be 26.8%, so both tolerances still test the model.
    layers = _deep_compression_layers(index_bits=5)
    for layer, (name, n, _, _, published_rate) in zip(layers, DEEP_COMPRESSION_LENET5, strict=True):
        assert layer.name == name
        rate = layer.total_bits / (BASELINE_BITS * n)
        assert rate == pytest.approx(published_rate, rel=0.06), name
    report = storage_report(layers)
    assert 1 / report.ratio_with_indices == pytest.approx(
        DEEP_COMPRESSION_LENET5_TOTAL_RATE, rel=0.04
    )
    assert report.num_fillers > 0  # ip1 at 8% density has gaps > 32 under 5-bit indices


def test_optimal_index_bits_never_cost_more_than_papers_fixed_bits():
    fixed = _deep_compression_layers(index_bits=5)
    optimal = _deep_compression_layers(index_bits=None)
    for a, b in zip(fixed, optimal, strict=True):
        assert b.total_bits <= a.total_bits
    assert storage_report(optimal).ratio_with_indices >= storage_report(fixed).ratio_with_indices


# --- Ye et al. 2018 LeNet-5 configuration --------------------------------------------------------

# Ye et al. 2018 prune LeNet-5 (430,500 weights) 167x, i.e. to 2,578 weights, quantize conv layers
# to 3 bits and fc layers to 2 bits (3 bits for the output layer) and report 1,910x "storage
# reduction of weight data" and 623x including indices. We did not find their per-layer kept
# counts, so we ASSUME the per-layer proportions of Zhang et al. 2018's published ADMM LeNet-5
# table (0.1K / 2K / 3.6K / 0.35K kept) scaled to 2,578: 43 / 852 / 1,534 / 149.
YE_LENET5 = [
    # name, weights, kept, bits
    ("conv1", 20 * 1 * 5 * 5, 43, 3),
    ("conv2", 50 * 20 * 5 * 5, 852, 3),
    ("fc1", 800 * 500, 1534, 2),
    ("fc2", 500 * 10, 149, 3),
]


def test_ye_et_al_lenet5_ratios_are_of_the_papers_order():
    layers = [
        layer_storage(name, weights=_mask(n, kept, seed), bits_per_value=bits)
        for seed, (name, n, kept, bits) in enumerate(YE_LENET5)
    ]
    report = storage_report(layers)
    assert report.num_weights == 430_500
    assert report.num_nonzeros == 2_578
    assert report.pruning_ratio == pytest.approx(167.0, abs=0.05)
    # Weight data without codebooks, by hand: (43 + 852 + 149) * 3 + 1534 * 2 = 6,200 bits,
    # 32 * 430,500 / 6,200 = 2,221.9x. The paper's 1,910x means 2.8 bits per kept weight on
    # average, i.e. more of their kept weights sit in the 3-bit layers than our assumed split puts
    # there; the split, not the formula, makes the difference.
    assert report.weight_data_bits == 6_200
    assert report.weight_data_ratio == pytest.approx(32 * 430_500 / 6_200)
    # A 32-bit scale per layer (uniform levels) costs 4 * 32 bits more: 2,177x.
    with_scales = storage_report([dataclasses.replace(layer, codebook_bits=32) for layer in layers])
    assert with_scales.weight_data_ratio == pytest.approx(32 * 430_500 / 6_328)
    # Including indices we measured 469x (optimal p per layer: 5 / 7 / 10 / 7) against the
    # paper's 623x. Uniformly random masks are the worst case for relative indexing: choosing
    # 1,534 of 400,000 positions at random carries log2 C(400000, 1534) / 1534 = 9.5 bits per
    # fc1 weight, whereas 623x leaves only 5.8 index bits per kept weight, which trained masks
    # (clustered on few input neurons) or a fixed index width without fillers would allow.
    # So we only assert the order of magnitude (within 2x either way), and that indices cost.
    assert 623 / 2 < report.ratio_with_indices < 623 * 2
    assert 1910 / 2 < report.weight_data_ratio < 1910 * 2
    assert report.ratio_with_indices < report.weight_data_ratio


# --- Report data and rendering ------------------------------------------------------------------


def test_report_to_json_round_trips_and_totals_add_up():
    layers = _deep_compression_layers(index_bits=None)
    report = storage_report(layers)
    data = json.loads(report.to_json())
    assert data == report.to_dict()
    assert [row["name"] for row in data["layers"]] == ["conv1", "conv2", "ip1", "ip2"]
    for key in ("value_bits", "index_bits", "codebook_bits", "total_bits", "num_fillers"):
        assert data["totals"][key] == sum(row[key] for row in data["layers"])
    for row in data["layers"]:
        assert row["total_bits"] == row["value_bits"] + row["index_bits"] + row["codebook_bits"]
        assert LayerStorage(**{k: row[k] for k in _FIELDS}) in layers
    assert data["totals"]["baseline_bits"] == 32 * 430_500


_FIELDS = (
    "name",
    "num_weights",
    "num_nonzeros",
    "bits_per_value",
    "codebook_bits",
    "sparse",
    "index_bits_per_entry",
    "num_fillers",
)


def test_numpy_integers_are_stored_as_python_ints():
    layer = LayerStorage("l", np.int64(10), np.int32(2), np.uint8(3), index_bits_per_entry=2)
    assert type(layer.num_weights) is int and type(layer.bits_per_value) is int
    json.dumps(layer.to_dict())


def test_format_report_renders_rows_totals_and_ratios():
    text = format_report(storage_report(_deep_compression_layers(index_bits=5)))
    lines = text.splitlines()
    assert lines[0].split() == [
        "layer",
        "weights",
        "nonzeros",
        "fillers",
        "b",
        "p",
        "values",
        "indices",
        "codebook",
        "total",
        "ratio",
    ]
    assert any(line.startswith("ip1") and "400,000" in line for line in lines)
    assert any(line.startswith("total") and "430,500" in line for line in lines)
    assert "KiB" in text and "MiB" in text and "×" in text
    assert "33.1×" in text  # with indices, as in the test above
    dense = format_report(storage_report([layer_storage("d", weights=np.ones(4), sparse=False)]))
    assert "dense" in dense


def test_format_bits_uses_binary_prefixes():
    assert format_bits(0) == "0 B"
    assert format_bits(8 * 1023) == "1023 B"
    assert format_bits(8 * 1024) == "1.00 KiB"
    assert format_bits(8 * 1024 * 1536) == "1.50 MiB"


# --- 4. Bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(), "exactly one of weights or positions"),
        (dict(weights=np.ones(3), positions=[0]), "exactly one of weights or positions"),
        (dict(positions=[0, 1]), "received: num_weights=None"),
        (dict(positions=[2, 1], num_weights=5), "strictly increasing positions"),
        (dict(positions=[1, 1], num_weights=5), "received: positions[0:2]=[1, 1]"),
        (dict(positions=[-1, 1], num_weights=5), "received: positions[0]=-1"),
        (dict(positions=[0, 5], num_weights=5), "positions < num_weights (5)"),
        (dict(positions=[0.0, 1.0], num_weights=5), "1-D array of integers"),
        (dict(positions=[[0, 1]], num_weights=5), "1-D array of integers"),
        (dict(weights=np.ones(3), num_weights=4), "num_weights == weights.size (3)"),
        (dict(weights=np.ones(0)), "non-empty weights"),
        (dict(weights=np.ones(3), bits_per_value=0), "received: bits_per_value=0"),
        (dict(weights=np.ones(3), bits_per_value=65), "bits_per_value to be an integer in [1, 64]"),
        (dict(weights=np.ones(3), bits_per_value=True), "received: bits_per_value=True"),
        (dict(weights=np.ones(3), bits_per_value=3.0), "received: bits_per_value=3.0"),
        (dict(weights=np.ones(3), index_bits=0), "received: index_bits=0"),
        (dict(weights=np.ones(3), index_bits=33), "index_bits to be an integer in [1, 32]"),
        (dict(weights=np.ones(3), max_index_bits=0), "received: max_index_bits=0"),
        (dict(weights=np.ones(3), codebook_bits=-1), "received: codebook_bits=-1"),
        (dict(weights=np.ones(3), sparse="yes"), "received: sparse='yes'"),
    ],
)
def test_layer_storage_rejects_bad_input_naming_the_layer(kwargs, fragment):
    with pytest.raises(StorageError) as info:
        layer_storage("conv7", **kwargs)
    message = str(info.value)
    assert message.startswith("layer 'conv7': Expected ")
    assert fragment in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(num_weights=0, num_nonzeros=0, bits_per_value=3), "received: num_weights=0"),
        (dict(num_weights=4, num_nonzeros=5, bits_per_value=3), "num_nonzeros to be an integer in"),
        (dict(num_weights=4, num_nonzeros=1, bits_per_value=3), "received: index_bits_per_entry=0"),
        (
            dict(
                num_weights=4,
                num_nonzeros=1,
                bits_per_value=3,
                index_bits_per_entry=2,
                num_fillers=4,
            ),
            "num_fillers to be an integer in [0, 3]",
        ),
        (
            dict(
                num_weights=4,
                num_nonzeros=1,
                bits_per_value=3,
                sparse=False,
                index_bits_per_entry=2,
            ),
            "index_bits_per_entry (dense) to be an integer in [0, 0]",
        ),
    ],
)
def test_layer_storage_dataclass_validates(kwargs, fragment):
    with pytest.raises(StorageError, match="layer 'fc'") as info:
        LayerStorage("fc", **kwargs)
    assert fragment in str(info.value)


def test_other_bad_inputs():
    with pytest.raises(StorageError, match="received: name=''"):
        layer_storage("", weights=np.ones(2))
    layer = layer_storage("a", weights=np.ones(2))
    with pytest.raises(
        StorageError, match=r"unique layer names; received: duplicate names=\['a'\]"
    ):
        storage_report([layer, layer])
    with pytest.raises(StorageError, match="at least one layer"):
        storage_report([])
    with pytest.raises(StorageError, match=r"LayerStorage items; received: layers\[0\]"):
        storage_report([{"name": "a"}])
    with pytest.raises(StorageError, match="a StorageReport"):
        format_report([layer])
    assert isinstance(storage_report([layer]), StorageReport)
