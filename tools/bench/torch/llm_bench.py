"""PyTorch twin of tools/bench/src/llm-bench.ts, for --vs-torch: one shape x mode per process.

Same model (Llama / Qwen2 style: tied embedding, RMSNorm, rotate-half RoPE, grouped-query attention with an
explicit causal mask, optional q/k/v biases, SwiGLU), same random init (N(0, 0.02^2), o/down scaled by
1/sqrt(2L)), same work:

  train    reference log-probs under no_grad (full: a frozen deep copy; lora: the same model with its adapters
           off), then the policy's log-probs, the GRPO loss (grpo aggregation: per-sequence token mean over the
           completion mask, then the mean; clipped ratio with eps; k3 KL with beta; pi_old = pi_ref), backward,
           global-norm clip and AdamW over the trainable parameters. Tokens: all row tokens, as ours.
  generate prefill of the prompts, then one token per step for the whole batch with a key/value cache,
           sampled at temperature 1; tokens: the generated ones.

LoRA is a hand-written low-rank adapter on every targeted Linear (no peft package), initialised as PEFT:
A [r, in] kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B [out, r] zero, scale alpha / r; the base
weights have requires_grad False. The logits are built whole (no vocabulary chunking: PyTorch has no fused
head here). Peak RSS: resource.getrusage(RUSAGE_SELF).ru_maxrss. Run with OMP_WAIT_POLICY=PASSIVE (Debian's
torch 1.13 oversubscribes 2 cores otherwise).

Before building anything the run is estimated (20 bytes a parameter full, 4 (N + A) + 12 A under LoRA, plus
the caller's activation estimate when given) and skipped, with the reason, when it exceeds 85% of memory.

Usage: python3 llm_bench.py '<json: {config, mode, lora, lengths, steps, threads, optimizer, loss}>'
  -> one line "LLM-BENCH-RESULT {json}" ({train, generate, peakRss, torch, threads} or {skipped}).
"""
import copy
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

spec = json.loads(sys.argv[1])
c, mode, lengths = spec["config"], spec["mode"], spec["lengths"]
torch.set_num_threads(spec.get("threads", 2))
torch.manual_seed(1)
V, C, L, H, Hkv, FF, T = c["vocabSize"], c["dModel"], c["nLayers"], c["nHeads"], c["nKvHeads"], c["dFf"], c["maxSeqLen"]
hd, eps, G, bias = C // H, c["normEps"], H // Hkv, bool(c.get("attentionBias", False))
R, ALPHA, TARGETS = spec["lora"]["rank"], spec["lora"]["alpha"], set(spec["lora"]["targets"])
RESULT = "LLM-BENCH-RESULT "


def emit(obj):
    print(RESULT + json.dumps(obj), flush=True)


def estimate():
    """Bytes of weights, gradients and moments (the rule of LlmPlan / Backend.estimate) plus `activationBytes`."""
    kv = Hkv * hd
    n = V * C + L * (2 * C * C + 2 * C * kv + 3 * C * FF + 2 * C + (C + 2 * kv if bias else 0)) + C
    dims = {"q": (C, C), "k": (C, kv), "v": (C, kv), "o": (C, C), "gate": (C, FF), "up": (C, FF), "down": (FF, C)}
    a = L * sum(R * (i + o) for t, (i, o) in dims.items() if t in TARGETS)
    state = 20 * n if mode == "full" else 4 * (n + a) + 12 * a
    return state + spec.get("activationBytes", 0)


memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
need = estimate()
if need > 0.85 * memory:
    emit({"skipped": f"does not fit: needs ~{need / 2**30:.1f} GiB, machine has {memory / 2**30:.1f} GiB"})
    sys.exit(0)


class RMSNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(C))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight


class LoraLinear(torch.nn.Module):
    """x W^T (+ b) + (alpha / r) (x A^T) B^T; the adapter is skipped while `enabled` is False."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.empty(R, base.in_features))
        torch.nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, R))
        self.scale, self.enabled = ALPHA / R, True

    def forward(self, x):
        y = self.base(x)
        return y + (x @ self.a.t() @ self.b.t()) * self.scale if self.enabled else y


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
        self.q = torch.nn.Linear(C, C, bias=bias)
        self.k = torch.nn.Linear(C, Hkv * hd, bias=bias)
        self.v = torch.nn.Linear(C, Hkv * hd, bias=bias)
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
        att = torch.softmax(q @ kr.transpose(-1, -2) / hd**0.5 + mask, -1) @ vr  # [B, H, t, hd]
        h = x + self.o(att.transpose(1, 2).reshape(B, t, C))
        n2 = self.n2(h)
        return h + self.down(F.silu(self.gate(n2)) * self.up(n2)), (k, v)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, C)
        self.layers = torch.nn.ModuleList([Block() for _ in range(L)])
        self.norm = RMSNorm()
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith(("o.weight", "down.weight")) else 0.02
                    p.normal_(0, std)

    def forward(self, ids, start=0, caches=None):
        t = ids.shape[1]
        pos = torch.arange(start, start + t)
        mask = torch.full((t, start + t), float("-inf")).triu(start + 1)
        x = self.embed(ids)
        new = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, pos, mask, None if caches is None else caches[i])
            new.append(kv)
        return self.norm(x) @ self.embed.weight.t(), new  # tied head


def add_adapters(model):
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = []
    for block in model.layers:
        for t in TARGETS:
            a = LoraLinear(getattr(block, t))
            setattr(block, t, a)
            adapters.append(a)
    return adapters


def set_adapters(adapters, on):
    for a in adapters:
        a.enabled = on


policy = Model()
adapters = add_adapters(policy) if mode == "lora" else []
reference = None
if mode == "full":
    reference = copy.deepcopy(policy)
    for p in reference.parameters():
        p.requires_grad_(False)
trainable = [p for p in policy.parameters() if p.requires_grad]
o = spec["optimizer"]
# Decay only on matrices, as ours (and nanoGPT): norms' gains and biases are not decayed.
flat = [p for p in trainable if p.dim() < 2]
groups = [{"params": [p for p in trainable if p.dim() >= 2]}] + ([{"params": flat, "weight_decay": 0.0}] if flat else [])
opt = torch.optim.AdamW(groups, lr=o["learningRate"], betas=(o["beta1"], o["beta2"]), weight_decay=o["weightDecay"])

P, Tc, B = lengths["trainPrompt"], lengths["trainCompletion"], lengths["trainBatch"]
ids = torch.randint(0, V, (B, P + Tc))
mask = torch.zeros(B, P + Tc - 1)
mask[:, P - 1 :] = 1  # position t scores token t + 1: the completion's tokens are scored from P - 1 on
adv = torch.randn(B, 1)
lo = spec["loss"]


def logprobs(model):
    logits, _ = model(ids[:, :-1])  # [B, T-1, V]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]  # [B, T-1]


def train():
    with torch.no_grad():
        if mode == "lora":
            set_adapters(adapters, False)
            ref = logprobs(policy)
            set_adapters(adapters, True)
        else:
            ref = logprobs(reference)
    opt.zero_grad(set_to_none=True)
    lp = logprobs(policy)
    ratio = torch.exp(lp - ref)  # pi_old = pi_ref
    surrogate = -torch.min(ratio * adv, torch.clamp(ratio, 1 - lo["epsilon"], 1 + lo["epsilon"]) * adv)
    d = ref - lp
    per_token = surrogate + lo["beta"] * (torch.exp(d) - d - 1)
    loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, o["maxGradNorm"])
    opt.step()


GP, GN, GB = lengths["genPrompt"], lengths["genNew"], lengths["genBatch"]
prompts = torch.randint(0, V, (GB, GP))


def generate(n):
    with torch.no_grad():
        logits, caches = policy(prompts)
        for s in range(n):
            tok = torch.multinomial(torch.softmax(logits[:, -1], -1), 1)
            if s == n - 1:
                break
            logits, caches = policy(tok, GP + s, caches)
    return GB * n


def rate(tokens, f, warm):
    """Tokens per wall second and per CPU second (all threads), medians of `steps` runs after `warm`."""
    warm()
    wall, cpu = [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall": tokens / statistics.median(wall), "cpu": tokens / statistics.median(cpu)}


emit({
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "train": rate(B * (P + Tc), train, train),
    "generate": rate(GB * GN, lambda: generate(GN), lambda: generate(2)),
    "peakRss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
})
