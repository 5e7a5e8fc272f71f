"""recipes.idx_files: IDX encoding, MD5 checks and verified writing (synthetic, fast)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from recipes import idx_files


def _random_uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# IDX and checksums (synthetic, fast)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "magic"),
    [((5, 28, 28), 2051), ((5,), 2049), ((2, 3, 4, 5), 2052), ((0, 28, 28), 2051)],
)
def test_encode_idx_writes_lecun_header_and_decode_round_trips(shape, magic):
    array = _random_uint8(shape)
    encoded = idx_files.encode_idx(array)
    header = np.frombuffer(encoded[: 4 + 4 * len(shape)], dtype=">u4")
    assert header[0] == magic
    assert tuple(header[1:]) == shape
    np.testing.assert_array_equal(idx_files.decode_idx(encoded), array)


def test_write_idx_then_read_idx_gives_the_same_array(tmp_path):
    images = _random_uint8((7, 28, 28), seed=1)
    path = tmp_path / "sub" / "images-idx3-ubyte"
    idx_files.write_idx(path, images)
    assert path.stat().st_size == 16 + images.size
    np.testing.assert_array_equal(idx_files.read_idx(path), images)


def test_decode_idx_refuses_truncated_or_non_ubyte_files():
    encoded = idx_files.encode_idx(_random_uint8((3, 4, 4)))
    with pytest.raises(ValueError, match="Expected .* bytes"):
        idx_files.decode_idx(encoded[:-1])
    with pytest.raises(ValueError, match="unsigned bytes"):
        idx_files.decode_idx(b"\x00\x00\x0d\x01" + encoded[4:])  # 0x0d: float32
    with pytest.raises(ValueError, match="4-byte"):
        idx_files.decode_idx(b"\x00")


def test_encode_idx_refuses_non_uint8_arrays():
    with pytest.raises(ValueError, match="dtype=float32"):
        idx_files.encode_idx(np.zeros((2, 2), np.float32))


def test_verify_md5_accepts_the_original_and_refuses_a_corrupted_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    idx_files.write_idx(path, _random_uint8((100,)))
    expected = hashlib.md5(path.read_bytes()).hexdigest()
    idx_files.verify_md5(path, expected)

    corrupted = bytearray(path.read_bytes())
    corrupted[20] ^= 0x01
    path.write_bytes(bytes(corrupted))
    actual = hashlib.md5(bytes(corrupted)).hexdigest()
    with pytest.raises(idx_files.ChecksumMismatchError) as error:
        idx_files.verify_md5(path, expected)
    message = str(error.value)
    assert str(path) in message and expected in message and actual in message


def test_materialize_idx_files_rewrites_a_bad_cache_and_refuses_a_bad_source(tmp_path):
    good = {"a-idx1-ubyte": idx_files.encode_idx(_random_uint8((10,), seed=2))}
    md5 = {name: hashlib.md5(raw).hexdigest() for name, raw in good.items()}
    calls = []

    def produce():
        calls.append(1)
        return good

    paths = idx_files.materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert paths["a-idx1-ubyte"].read_bytes() == good["a-idx1-ubyte"] and len(calls) == 1
    idx_files.materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert len(calls) == 1, "verified cached files must be reused"

    paths["a-idx1-ubyte"].write_bytes(b"\x00\x00\x08\x01garbage")
    idx_files.materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert paths["a-idx1-ubyte"].read_bytes() == good["a-idx1-ubyte"] and len(calls) == 2

    paths["a-idx1-ubyte"].unlink()
    bad = {"a-idx1-ubyte": idx_files.encode_idx(_random_uint8((10,), seed=3))}
    with pytest.raises(idx_files.ChecksumMismatchError, match="a-idx1-ubyte made from synthetic"):
        idx_files.materialize_idx_files(tmp_path, md5, lambda: bad, source="synthetic")
    assert not paths["a-idx1-ubyte"].exists(), "a file failing its MD5 must not be written"
