#!/usr/bin/env python3
"""Reference forward of a Hugging Face Llama / Mistral / Qwen2 / Qwen3 model directory, in plain torch.

Written from the transformers modeling files' semantics, without transformers: reads config.json and
model.safetensors (or model.safetensors.index.json + shards) by hand (struct + json + numpy), widens
F16 / BF16 to float, and computes the logits of the token ids given, in float64 so that the reference's
own rounding is negligible next to the float32 model it checks.

    python3 hf_forward.py <model dir> '<ids as JSON, [[...], ...]>'   → JSON {"shape": [B, T, V], "logits": [...]}
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

DT = torch.float64


def read_safetensors(file):
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=np.uint8)
        dtype, shape = info["dtype"], info["shape"]
        if dtype == "F32":
            a = raw.view("<f4")
        elif dtype == "F16":
            a = raw.view("<f2").astype(np.float32)
        elif dtype == "BF16":
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{file}: {name}: dtype {dtype}")
        out[name] = torch.from_numpy(a.astype(np.float64).reshape(shape))
    return out


def read_weights(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(os.path.join(d, shard)))
    return out


def inv_freq(cfg, hd):
    """transformers' default rope init, `_compute_linear_scaling_rope_parameters` and `_compute_llama3_parameters`."""
    base = cfg.get("rope_theta", 10000.0)
    f = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=DT) / hd))
    rs = cfg.get("rope_scaling")
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return f
    if kind == "linear":
        return f / rs["factor"]
    assert kind == "llama3", kind
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / f
    f_llama = torch.where(wavelen > low_wavelen, f / factor, f)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * f_llama / factor + smooth * f_llama
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, f_llama)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(d, ids):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    family = cfg["model_type"]
    w = read_weights(d)
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or (128 if family == "qwen3" else C // H)
    eps = cfg.get("rms_norm_eps", 1e-6)
    ids = torch.tensor(ids, dtype=torch.long)
    B, T = ids.shape
    x = w["model.embed_tokens.weight"][ids]  # [B, T, C]
    freqs = torch.arange(T, dtype=DT)[:, None] * inv_freq(cfg, hd)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # [1, 1, T, hd]
    mask = torch.full((T, T), float("-inf"), dtype=DT).triu(1)

    def lin(name, v):
        y = v @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = lin(p + "self_attn.q_proj", h).view(B, T, H, hd)
        k = lin(p + "self_attn.k_proj", h).view(B, T, Hkv, hd)
        v = lin(p + "self_attn.v_proj", h).view(B, T, Hkv, hd)
        if family == "qwen3":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H(kv), T, hd]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)  # repeat_kv
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + lin(p + "self_attn.o_proj", att.transpose(1, 2).reshape(B, T, H * hd))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(p + "mlp.down_proj", torch.nn.functional.silu(lin(p + "mlp.gate_proj", h)) * lin(p + "mlp.up_proj", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.T


if __name__ == "__main__":
    logits = forward(sys.argv[1], json.loads(sys.argv[2]))
    json.dump({"shape": list(logits.shape), "logits": logits.flatten().tolist()}, sys.stdout)
