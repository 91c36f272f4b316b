#!/usr/bin/env python3
"""Known-answer fixtures for tests/formats, computed with gguf-py (ggml's own Python package).

gguf-py is the independent reference: its numpy dequantizers and GGUFReader share no code with
our C++ reader. Two fixtures are written:

  tests/formats/data/dequant_vectors.json
      Per supported type (f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q6_k): seeded random raw bytes
      and the float32 values gguf.quants.dequantize makes of them. Block scales are drawn as sane
      fp16 values (random fp16 bit patterns are mostly huge/NaN and would test nothing); the
      quant payload bytes are fully random. f16/bf16 use random bit patterns plus special values.

  tests/formats/data/smollm2_reference.json
      For the default model (SmolLM2-135M-Instruct Q4_1): file size, version, every scalar
      metadata value, array lengths with a few elements, every tensor's name/type/shape/absolute
      offset, a few dequantized rows of token_embd (q8_0), blk.0.attn_q and blk.29.ffn_down
      (q4_1) and output_norm (f32), plus whole-tensor float64 sums of those four tensors.

  tests/formats/data/tiny.gguf + tiny_gguf.json
      A ~3 KB GGUF written by gguf-py's GGUFWriter (alignment 64): metadata of every value type
      and arrays of several element types, and one small tensor of each supported type, with
      the values GGUFReader + dequantize read back from it.

  tests/formats/data/tiny.safetensors + tiny_safetensors.json
      A small file written by the `safetensors` package (numpy API): F32 and F16 tensors of
      several ranks and a __metadata__ map, with their values as float32.

Floats are stored as hex of their float32 bit patterns (exact, NaN-safe); raw bytes as hex.

Run: python3 scripts/make_dequant_vectors.py [--model PATH]   (re-running gives the same files)
"""
import argparse
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "formats", "data")
SEED = 20240611


def f32_hex(a):
    return np.ascontiguousarray(a, dtype=np.float32).tobytes().hex()


def sane_fp16(rng, n, scale):
    """n fp16 scales as raw little-endian bytes: |value| ~ scale, random sign, some zeros."""
    v = (rng.standard_normal(n) * scale).astype(np.float16)
    v[rng.random(n) < 0.05] = 0
    return v.view(np.uint8).reshape(n, 2)


def random_blocks(rng, qtype, n_blocks):
    """Raw bytes of n_blocks blocks: random payload, sane fp16 scales at the layout's offsets."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if qtype in (T.Q8_0, T.Q4_0):  # d at 0
        raw[:, 0:2] = sane_fp16(rng, n_blocks, 0.05)
    elif qtype == T.Q4_1:  # d at 0, m at 2
        raw[:, 0:2] = sane_fp16(rng, n_blocks, 0.05)
        raw[:, 2:4] = sane_fp16(rng, n_blocks, 0.5)
    elif qtype == T.Q4_K:  # d at 0, dmin at 2
        raw[:, 0:2] = sane_fp16(rng, n_blocks, 0.002)
        raw[:, 2:4] = sane_fp16(rng, n_blocks, 0.002)
    elif qtype == T.Q6_K:  # d is the last 2 bytes of the 210
        raw[:, 208:210] = sane_fp16(rng, n_blocks, 0.002)
    return raw


def special_halves():
    """fp16/bf16 bit patterns worth pinning: zeros, subnormals, limits, inf, NaN."""
    return [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
            0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF, 0x3555, 0x007F, 0x0080, 0x7F80, 0x7F7F]


def dequant_vectors():
    rng = np.random.default_rng(SEED)
    cases = []
    f32 = np.concatenate([rng.standard_normal(60).astype(np.float32),
                          np.array([0.0, -0.0, np.inf, 1e-45], dtype=np.float32)])
    raw = f32.view(np.uint8)
    cases.append(("f32", 0, raw, dequantize(raw, T.F32)))
    for name, tid, qt in (("f16", 1, T.F16), ("bf16", 30, T.BF16)):
        bits = np.concatenate([np.array(special_halves(), dtype=np.uint16),
                               rng.integers(0, 1 << 16, size=492, dtype=np.uint16)])
        raw = bits.view(np.uint8)
        cases.append((name, tid, raw, dequantize(raw, qt)))
    for name, tid, qt, n_blocks in (("q8_0", 8, T.Q8_0, 24), ("q4_0", 2, T.Q4_0, 24),
                                    ("q4_1", 3, T.Q4_1, 24), ("q4_k", 12, T.Q4_K, 10),
                                    ("q6_k", 14, T.Q6_K, 10)):
        raw = random_blocks(rng, qt, n_blocks)
        cases.append((name, tid, raw.reshape(-1), dequantize(raw, qt).reshape(-1)))
    out = {"generator": "scripts/make_dequant_vectors.py (gguf-py %s, seed %d)"
                        % (getattr(gguf, "__version__", "?"), SEED),
           "cases": []}
    for name, tid, raw, expected in cases:
        expected = np.asarray(expected, dtype=np.float32).reshape(-1)
        out["cases"].append({"type": name, "ggml_type": tid, "n": int(expected.size),
                             "raw": np.ascontiguousarray(raw).tobytes().hex(),
                             "expected_f32": f32_hex(expected)})
    return out


def field_value(f):
    t = f.types[0]
    if t == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    v = f.parts[f.data[0]][0]
    if t == gguf.GGUFValueType.BOOL:
        return bool(v)
    if t in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return float(v)
    return int(v)


def model_reference(path):
    r = gguf.GGUFReader(path)
    out = {"file_size": os.path.getsize(path), "scalars": {}, "arrays": {}, "tensors": [],
           "rows": [], "sums": {}}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            out[key[5:]] = int(f.parts[f.data[0]][0])
            continue
        if f.types[0] != gguf.GGUFValueType.ARRAY:
            out["scalars"][key] = {"type": int(f.types[0]), "value": field_value(f)}
            continue
        et = f.types[1]
        n = len(f.data)
        picks = sorted({0, 1, n // 2, n - 1} & set(range(n)))
        if et == gguf.GGUFValueType.STRING:
            items = {str(i): bytes(f.parts[f.data[i]]).decode("utf-8") for i in picks}
        else:
            items = {str(i): f.parts[f.data[i]][0].item() for i in picks}
        out["arrays"][key] = {"elem_type": int(et), "length": n, "items": items}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]  # outermost first
        out["tensors"].append({"name": t.name, "ggml_type": int(t.tensor_type), "shape": shape,
                               "file_offset": int(t.data_offset), "n_bytes": int(t.n_bytes)})
    by_name = {t.name: t for t in r.tensors}
    picks = {"token_embd.weight": [0, 1, 2, 1000, 49151],
             "blk.0.attn_q.weight": [0, 17, 575],
             "blk.29.ffn_down.weight": [0, 300, 575],
             "output_norm.weight": [0]}
    for name, rows in picks.items():
        t = by_name[name]
        full = dequantize(t.data, t.tensor_type).astype(np.float32)
        full = full.reshape(-1, full.shape[-1])
        out["sums"][name] = float(full.astype(np.float64).sum())
        for i in rows:
            out["rows"].append({"tensor": name, "row": i, "expected_f32": f32_hex(full[i])})
    return out


def tiny_gguf(path):
    """Writes tiny.gguf with GGUFWriter and returns what GGUFReader + dequantize read from it."""
    rng = np.random.default_rng(SEED + 1)
    V = gguf.GGUFValueType
    w = gguf.GGUFWriter(path, arch="tiny")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.15625)
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 50))
    w.add_float64("t.f64", -2.5e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo wörld")
    w.add_key_value("t.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_i16", [-1, 2, -300], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("t.arr_i32", [7, -8, 9, 10], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_u64", [1 << 62, 3], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.arr_f32", [0.5, -1.25, 3.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.arr_f64", [1e100, -0.1], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("t.arr_str", ["a", "", "zz top"], V.ARRAY, sub_type=V.STRING)
    w.add_tensor("f32", rng.standard_normal((3, 4)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 8)).astype(np.float16))
    w.add_tensor("bf16", rng.integers(0, 1 << 16, size=(2, 16), dtype=np.uint16).view(np.uint8),
                 raw_dtype=T.BF16)
    for name, qt, rows, blocks in (("q8_0", T.Q8_0, 2, 2), ("q4_0", T.Q4_0, 1, 2),
                                   ("q4_1", T.Q4_1, 2, 1), ("q4_k", T.Q4_K, 1, 1),
                                   ("q6_k", T.Q6_K, 2, 1)):
        raw = random_blocks(rng, qt, rows * blocks).reshape(rows, -1)
        w.add_tensor(name, raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(path)
    out = {"generator": "scripts/make_dequant_vectors.py (gguf.GGUFWriter)", "tensors": []}
    for t in r.tensors:
        values = dequantize(t.data, t.tensor_type).reshape(-1)
        out["tensors"].append({"name": t.name, "ggml_type": int(t.tensor_type),
                               "shape": [int(x) for x in reversed(t.shape.tolist())],
                               "file_offset": int(t.data_offset), "n_bytes": int(t.n_bytes),
                               "expected_f32": f32_hex(values)})
    return out


def tiny_safetensors(path):
    """Writes tiny.safetensors with the safetensors package; returns the expected contents."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(SEED + 2)
    tensors = {"embed.weight": rng.standard_normal((5, 3)).astype(np.float32),
               "norm.weight": rng.standard_normal(7).astype(np.float16),
               "proj.weight": rng.standard_normal((2, 3, 4)).astype(np.float16),
               "scalar": np.array(2.5, dtype=np.float32)}
    save_file(tensors, path, metadata={"format": "np", "note": "tiny"})
    return {"generator": "scripts/make_dequant_vectors.py (safetensors.numpy.save_file)",
            "metadata": {"format": "np", "note": "tiny"},
            "tensors": [{"name": k, "dtype": "F32" if v.dtype == np.float32 else "F16",
                         "shape": list(v.shape), "expected_f32": f32_hex(v.astype(np.float32))}
                        for k, v in tensors.items()]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, ".models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    os.makedirs(DATA, exist_ok=True)
    with open(os.path.join(DATA, "dequant_vectors.json"), "w") as fh:
        json.dump(dequant_vectors(), fh, indent=1)
    tiny = tiny_gguf(os.path.join(DATA, "tiny.gguf"))
    with open(os.path.join(DATA, "tiny_gguf.json"), "w") as fh:
        json.dump(tiny, fh, indent=1)
    tiny = tiny_safetensors(os.path.join(DATA, "tiny.safetensors"))
    with open(os.path.join(DATA, "tiny_safetensors.json"), "w") as fh:
        json.dump(tiny, fh, indent=1)
    if os.path.exists(args.model):
        ref = model_reference(args.model)
        ref["generator"] = "scripts/make_dequant_vectors.py from " + os.path.basename(args.model)
        with open(os.path.join(DATA, "smollm2_reference.json"), "w") as fh:
            json.dump(ref, fh, indent=1, ensure_ascii=False)
    else:
        print("model not found, skipped smollm2_reference.json:", args.model)


if __name__ == "__main__":
    main()
