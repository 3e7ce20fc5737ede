"""PyTorch equivalent of tools/bench/src/train-bench.ts, for --vs-torch.

Same model (Llama/Qwen2 style: tied embedding, RMSNorm, rotate-half RoPE, grouped-query attention with an
explicit causal mask, SwiGLU), same shapes and steps: train = forward + cross-entropy + backward + AdamW
(lr 1e-3, betas 0.9/0.95, weight decay 0.1); forward = logits of the whole batch without gradients;
generate = prefill of the prompts then one token per step with a key/value cache, sampled at temperature 1.
Run with OMP_WAIT_POLICY=PASSIVE (Debian's torch 1.13 oversubscribes 2 cores otherwise).

Usage: python3 train_bench.py '<json: {config, batch, promptLen, newTokens, rounds, threads}>'  → one JSON line.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

spec = json.loads(sys.argv[1])
c = spec["config"]
torch.set_num_threads(spec.get("threads", 2))
torch.manual_seed(1)
V, C, L, H, Hkv, FF, T = c["vocabSize"], c["dModel"], c["nLayers"], c["nHeads"], c["nKvHeads"], c["dFf"], c["maxSeqLen"]
hd, eps, G = C // H, c["normEps"], H // Hkv


class RMSNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(C))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight


inv = c["ropeTheta"] ** (-torch.arange(0, hd, 2).float() / hd)
ang = torch.outer(torch.arange(T).float(), inv)
COS, SIN = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)


def rope(x, pos):  # x [B, h, t, hd]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * COS[pos] + torch.cat([-x2, x1], -1) * SIN[pos]


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = RMSNorm(), RMSNorm()
        self.q = torch.nn.Linear(C, C, bias=False)
        self.k = torch.nn.Linear(C, Hkv * hd, bias=False)
        self.v = torch.nn.Linear(C, Hkv * hd, bias=False)
        self.o = torch.nn.Linear(C, C, bias=False)
        self.gate = torch.nn.Linear(C, FF, bias=False)
        self.up = torch.nn.Linear(C, FF, bias=False)
        self.down = torch.nn.Linear(FF, C, bias=False)

    def forward(self, x, pos, mask, cache=None):
        B, t, _ = x.shape
        n = self.n1(x)
        q = rope(self.q(n).view(B, t, H, hd).transpose(1, 2), pos)
        k = rope(self.k(n).view(B, t, Hkv, hd).transpose(1, 2), pos)
        v = self.v(n).view(B, t, Hkv, hd).transpose(1, 2)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        kr, vr = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
        att = torch.softmax(q @ kr.transpose(-1, -2) / hd**0.5 + mask, -1) @ vr
        h = x + self.o(att.transpose(1, 2).reshape(B, t, C))
        n2 = self.n2(h)
        return h + self.down(F.silu(self.gate(n2)) * self.up(n2)), (k, v)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, C)
        self.layers = torch.nn.ModuleList([Block() for _ in range(L)])
        self.norm = RMSNorm()
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, ids, start=0, caches=None):
        t = ids.shape[1]
        pos = torch.arange(start, start + t)
        S = start + t
        mask = torch.full((t, S), float("-inf")).triu(start + 1)
        x = self.embed(ids)
        new = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, pos, mask, None if caches is None else caches[i])
            new.append(kv)
        return self.norm(x) @ self.embed.weight.t(), new


model = Model()
B, rounds = spec["batch"], spec["rounds"]
data = torch.randint(0, V, (B, T + 1))
inputs, targets = data[:, :T], data[:, 1:]
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)


def train():
    opt.zero_grad(set_to_none=True)
    logits, _ = model(inputs)
    F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)).backward()
    opt.step()


def forward():
    with torch.no_grad():
        model(inputs)[0].sum().item()


P, N = spec["promptLen"], spec["newTokens"]
prompts = torch.randint(0, V, (B, P))


def generate():
    with torch.no_grad():
        logits, caches = model(prompts)
        for s in range(N):
            tok = torch.multinomial(torch.softmax(logits[:, -1], -1), 1)
            if s == N - 1:
                break
            logits, caches = model(tok, P + s, caches)


def rate(tokens, f):
    """Tokens per wall second and per CPU second (all threads), medians of the rounds after a warm-up."""
    f()
    wall, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall": tokens / statistics.median(wall), "cpu": tokens / statistics.median(cpu)}


print(json.dumps({
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "train": rate(B * T, train),
    "forward": rate(B * T, forward),
    "generate": rate(B * N, generate),
}))
