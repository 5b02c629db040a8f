"""Does HydraLoRA adapt one pretrained model to several styles better than LoRA at equal parameters?

Two tasks, each: pretrain a small model here (fixed seed, cached in the temp folder so every method
starts from the same weights), then adapt it to K = 4 styles mixed in one training set, every
sample of one style, the style label known per sample. Every dataset is generated
deterministically in this script; nothing is downloaded.

Task "charlm": a character-level transformer LM (4 blocks of width 64), pretrained on a procedural
base language (Zipfian lexicon, selectional preferences); the styles transform its sentences:
    vowelshift  every vowel rotated a->e->i->o->u->a
    mirror      every word spelled backwards
    verbfinal   subject object verb, adjectives after nouns, postpositions
    lexicon     nouns, verbs and adjectives replaced by the words of a second, unseen lexicon
A sequence carries no style tag: a model must infer the style from the characters it has seen.
Loss: held-out next-character cross-entropy (nats).

Task "video": a tiny diffusers HunyuanVideoTransformer3DModel (2 dual- and 2 single-stream blocks,
width 32), pretrained with the rectified-flow objective HunyuanVideo was trained with on synthetic
4-channel latent "videos" (a moving blob on a gradient, 4 frames of 8x8) whose parameters the
prompt embedding encodes; the styles are animation styles of the same content:
    twos      animated on twos (every second frame held)
    outline   a ring instead of a filled blob
    palette   channels permuted and values posterised to steps of 0.5
    mirror    mirrored left-right and played backwards
The prompt has one token that names the style (a vector unseen in pretraining), so the style is
in the conditioning. Loss: held-out flow-matching MSE at fixed noise and noise levels.

Methods, all at the trainable-parameter count of `lora` within +-5 % (checked), except `lora_x2`.
Adapters on every Linear of every block (charlm: qkv, proj, fc1, fc2; video: the modules
`ptta train` adapts).
    lora           LoRA (hydralora with N = 1)
    hydra_n2/4/8   HydraLoRA, per-token router on the layer input (the paper's setting)
    hydra_sup      HydraLoRA, N = K = 4 heads, no router: head k is forced for every token of a
                   style-k sample, in training and at test, by head_weights((B, N) one-hot).
                   It is told the style, which on charlm the other methods must infer
    hydra_learned  HydraLoRA N = 4, one learnable weight per head and layer
    lora_x2        LoRA at twice the rank: what twice the parameters buy
    lora_tag       (charlm only) LoRA told the style like hydra_sup is: a fixed random tag vector
                   per style added to the first position's embedding. Separates what hydra_sup gains
                   from knowing the style from what it gains from one head per style
Protocol: lr chosen per method on a validation split (seed 0, `--lrs`), then `--seeds` seeds at
that lr (seed 0 is the sweep's run); a seed sets the adapter's initialisation and the batch order,
the same batches for every method. Head specialisation: for routers the mutual information
I(style; head) in bits between a test token's style and the head its gate picks, with
p(head | style) the gate's mean over the style's tokens, per layer (the maximum is log2 min(K, N));
for hydra_sup the K x K test losses with head j forced on style k.

Rows go to benchmarks/results/adaptation.csv (one metric a row), plotted by
benchmarks/plot_adaptation.py. Runs go two at a time, one thread each (`--workers`). `--quick`
(tiny sizes, one lr, one seed) checks the harness in well under a minute.

    python benchmarks/bench_adaptation.py                  # charlm at the default size
    python benchmarks/bench_adaptation.py --task video     # the video task; --task all: both
    python benchmarks/bench_adaptation.py --quick --csv /tmp/adaptation.csv
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from results_csv import append_rows, git_commit
from torch import nn

import hydralora

RESULTS_CSV = Path(__file__).parent / "results" / "adaptation.csv"
CACHE_DIR = Path(tempfile.gettempdir()) / "hydralora_bench_adaptation"
COLUMNS = ("run_id", "date", "commit", "machine", "torch", "task", "size", "method", "mixing", "heads", "rank",
           "trainable_params", "params_vs_lora", "lr", "seed", "phase", "split", "metric", "style", "head", "value",
           "steps", "wall_s")
PARAM_TOLERANCE = 0.05
K = 4  # styles per task


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    heads: int
    mixing: str          # "fixed" (LoRA as N = 1; supervised heads), "router", "learned"
    rank: int
    supervised: bool = False
    tagged: bool = False  # charlm: the style is told through a tag added to the first position

    def config(self, targets) -> hydralora.HydraConfig:
        return hydralora.HydraConfig(r=self.rank, alpha=float(self.rank), num_heads=self.heads, mixing=self.mixing,
                                     target_modules=targets)


# (name, heads, mixing, supervised, tagged, equal parameters)
METHOD_SPECS = (
    ("lora", 1, "fixed", False, False, True),
    ("hydra_n2", 2, "router", False, False, True),
    ("hydra_n4", 4, "router", False, False, True),
    ("hydra_n8", 8, "router", False, False, True),
    ("hydra_sup", K, "fixed", True, False, True),
    ("hydra_learned", 4, "learned", False, False, True),
    ("lora_x2", 1, "fixed", False, False, False),
    ("lora_tag", 1, "fixed", False, True, True),
)
METHOD_NAMES = tuple(spec[0] for spec in METHOD_SPECS)


def adapter_param_count(make_model, targets, heads: int, mixing: str, rank: int) -> int:
    model = make_model()
    hydralora.inject(model, hydralora.HydraConfig(r=rank, alpha=float(rank), num_heads=heads, mixing=mixing,
                                                  target_modules=targets))
    return hydralora.count_parameters(model)["trainable"]


def build_methods(make_model, targets, lora_rank: int, names, tags: bool = True) -> tuple[list[Method], int]:
    """Every method with the rank that brings its trainable parameters closest to LoRA's; stops
    when that is off by more than PARAM_TOLERANCE (the comparison would not be at equal parameters)."""
    budget = adapter_param_count(make_model, targets, 1, "fixed", lora_rank)
    methods = []
    for name, heads, mixing, supervised, tagged, equal in METHOD_SPECS:
        if (names and name not in names) or (tagged and not tags):
            continue
        if not equal:
            methods.append(Method(name, heads, mixing, 2 * lora_rank, supervised))
            continue
        if tagged:
            methods.append(Method(name, heads, mixing, lora_rank, supervised, tagged))
            continue
        counts = {r: adapter_param_count(make_model, targets, heads, mixing, r) for r in range(1, lora_rank + 1)}
        best = min(counts, key=lambda r: abs(counts[r] - budget))
        if abs(counts[best] / budget - 1) > PARAM_TOLERANCE:
            raise SystemExit(f"{name}: no rank gives {budget} trainable parameters within 5% "
                             f"(best r={best}: {counts[best]}); pick another lora rank")
        methods.append(Method(name, heads, mixing, best, supervised))
    return methods, budget


# ---------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------
@dataclass
class Size:
    steps: int            # adaptation steps per run
    batch: int
    lora_rank: int
    lrs: tuple[float, ...]
    seeds: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float


def cosine_schedule(opt: torch.optim.Optimizer, steps: int, warmup_frac: float = 0.05):
    """Linear warm-up over 5 % of the steps, then cosine down to 10 % of the lr."""
    warmup = max(1, int(steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def mutual_information(p_head_given_style: torch.Tensor) -> torch.Tensor:
    """I(style; head) in bits per layer from p(head | style), shape (K, layers, N), styles equally likely."""
    p = p_head_given_style.double().clamp_min(1e-12)
    p = p / p.sum(-1, keepdim=True)
    p_head = p.mean(0, keepdim=True)
    return (p * (p / p_head).log2()).sum(-1).mean(0)


class Task:
    """What differs between tasks: data, model, loss. Subclasses set name, styles, targets, size."""

    name: str
    styles: tuple[str, ...]
    targets: object
    size: Size
    base_state: dict
    cache_dir: Path | None = None  # where pretrained weights are kept; None: CACHE_DIR

    def make_model(self) -> nn.Module:
        raise NotImplementedError

    def pretrain_batch(self, gen: torch.Generator) -> tuple:
        raise NotImplementedError

    def train_batch(self, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        """(model inputs, styles (B,)) of one adaptation step."""
        raise NotImplementedError

    def eval_batch(self, split: str, k: int) -> tuple:
        raise NotImplementedError

    def loss(self, model: nn.Module, inputs: tuple, tags: torch.Tensor | None = None) -> torch.Tensor:
        """The objective; `tags` (B,) style labels for a task that can take them (`supports_tags`)."""
        raise NotImplementedError

    supports_tags = False

    def cache_key(self) -> dict:
        raise NotImplementedError

    # -- generic ---------------------------------------------------------------------------------
    def pretrained(self, log) -> dict:
        cache_dir = self.cache_dir or CACHE_DIR
        key = json.dumps({"task": self.name, **self.cache_key(), "torch": torch.__version__}, sort_keys=True)
        path = cache_dir / f"{self.name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        if path.exists():
            log(f"{self.name}: pretrained model from the cache {path}")
            return torch.load(path)
        size = self.size
        torch.manual_seed(0)
        model = self.make_model()
        opt = torch.optim.AdamW(model.parameters(), lr=size.pretrain_lr, weight_decay=0.01)
        sched = cosine_schedule(opt, size.pretrain_steps)
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for step in range(size.pretrain_steps):
            loss = self.loss(model, self.pretrain_batch(gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 250 == 0 or step == size.pretrain_steps - 1:
                log(f"{self.name}: pretrain step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
        return model.state_dict()

    def method_loss(self, model: nn.Module, method: Method, inputs: tuple, styles: torch.Tensor,
                    forced_head: int | None = None) -> torch.Tensor:
        if method.tagged:
            return self.loss(model, inputs, tags=styles)
        if not method.supervised:
            return self.loss(model, inputs)
        heads = styles if forced_head is None else torch.full_like(styles, forced_head)
        with hydralora.head_weights(model, F.one_hot(heads, method.heads).float()):
            return self.loss(model, inputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, method: Method | None, split: str, specialisation: bool) -> dict:
        """{'loss': [per style], 'mi': [per layer] (routers), 'forced': K x K (supervised)}."""
        model.eval()
        out: dict = {"loss": []}
        usage = []  # per style: (layers, N) p(head | style)
        for k in range(len(self.styles)):
            inputs = self.eval_batch(split, k)
            styles = torch.full((inputs[0].shape[0],), k, dtype=torch.long)
            if method is None:
                out["loss"].append(self.loss(model, inputs).item())
                continue
            out["loss"].append(self.method_loss(model, method, inputs, styles).item())
            if method.mixing == "router" and specialisation:
                usage.append(torch.stack([layer.last_head_usage for _, layer in hydralora.hydra_layers(model)]))
            if method.supervised and specialisation:
                out.setdefault("forced", []).append(
                    [self.method_loss(model, method, inputs, styles, forced_head=j).item() for j in range(method.heads)])
        if usage:
            out["mi"] = mutual_information(torch.stack(usage)).tolist()
            out["layers"] = [name for name, _ in hydralora.hydra_layers(model)]
        model.train()
        return out

    def train(self, method: Method, lr: float, seed: int, splits: tuple[str, ...]) -> tuple[dict, int, float]:
        torch.manual_seed(seed)
        model = self.make_model()
        model.load_state_dict(self.base_state)
        hydralora.inject(model, method.config(self.targets))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = cosine_schedule(opt, self.size.steps)
        gen = torch.Generator().manual_seed(seed)  # the same batches for every method at a seed
        start = time.perf_counter()
        model.train()
        for _ in range(self.size.steps):
            inputs, styles = self.train_batch(gen)
            loss = self.method_loss(model, method, inputs, styles)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        wall = time.perf_counter() - start
        results = {split: self.evaluate(model, method, split, specialisation=split == "test") for split in splits}
        return results, sum(p.numel() for p in params), wall


# ---------------------------------------------------------------------------------------------
# Task "charlm": a procedural language, four styles, a small char-level transformer
# ---------------------------------------------------------------------------------------------
CONSONANTS = "bcdfghjklmnprstvz"
VOWELS = "aeiou"
CHARS = " .abcdefghijklmnopqrstuvwxyz"
VOWEL_SHIFT = str.maketrans("aeiou", "eioua")
TEXT_STYLES = ("vowelshift", "mirror", "verbfinal", "lexicon")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) + (rng.choice(CONSONANTS) if rng.random() < 0.3 else "")
                   for _ in range(syllables))


def _lexicon(rng: random.Random, counts: dict[str, int], taken: set[str]) -> dict[str, list[str]]:
    lexicon = {}
    for category, count in counts.items():
        words: list[str] = []
        while len(words) < count:
            w = _word(rng, 1 if category in ("det", "prep") else rng.choice((1, 2, 2, 3)))
            if w not in taken and len(w) > 1:
                taken.add(w)
                words.append(w)
        lexicon[category] = words
    return lexicon


WORD_COUNTS = {"noun": 160, "verb": 70, "adj": 50, "det": 4, "prep": 6}


class Language:
    """Sentences `det (adj) noun verb det (adj) noun (prep det (adj) noun) .` with Zipfian words and
    selectional preferences (each verb takes 12 objects, each noun 5 adjectives), so that a
    language model has something beyond letter statistics to learn."""

    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        taken: set[str] = set()
        self.lex = _lexicon(rng, WORD_COUNTS, taken)
        # the "lexicon" style's vocabulary, disjoint from the first
        second = _lexicon(rng, {c: n for c, n in WORD_COUNTS.items() if c in ("noun", "verb", "adj")}, taken)
        self.translate = {w: second[c][i] for c in second for i, w in enumerate(self.lex[c])}
        self.weights = {c: [1.0 / (i + 1) ** 0.8 for i in range(len(ws))] for c, ws in self.lex.items()}
        self.objects = {v: rng.sample(self.lex["noun"], 12) for v in self.lex["verb"]}
        self.adjectives = {n: rng.sample(self.lex["adj"], 5) for n in self.lex["noun"]}

    def _pick(self, rng: random.Random, category: str) -> str:
        return rng.choices(self.lex[category], weights=self.weights[category])[0]

    def _np(self, rng: random.Random, noun: str | None = None) -> list[tuple[str, str]]:
        noun = noun or self._pick(rng, "noun")
        phrase = [(self._pick(rng, "det"), "det")]
        if rng.random() < 0.4:
            phrase.append((rng.choice(self.adjectives[noun]), "adj"))
        return phrase + [(noun, "noun")]

    def sentence(self, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
        verb = self._pick(rng, "verb")
        parts = {"subj": self._np(rng), "verb": [(verb, "verb")], "obj": self._np(rng, rng.choice(self.objects[verb]))}
        parts["pp"] = [(self._pick(rng, "prep"), "prep")] + self._np(rng) if rng.random() < 0.35 else []
        return parts

    def render(self, parts: dict[str, list[tuple[str, str]]], style: str | None) -> str:
        if style == "verbfinal":
            def postnominal(np: list[tuple[str, str]]) -> list[str]:  # det noun adj
                return [w for w, c in np if c != "adj"] + [w for w, c in np if c == "adj"]
            pp = postnominal(parts["pp"][1:]) + [parts["pp"][0][0]] if parts["pp"] else []
            words = postnominal(parts["subj"]) + postnominal(parts["obj"]) + pp + [parts["verb"][0][0]]
        else:
            words = [w for key in ("subj", "verb", "obj", "pp") for w, _ in parts[key]]
            if style == "lexicon":
                words = [self.translate.get(w, w) for w in words]
            elif style == "mirror":
                words = [w[::-1] for w in words]
            elif style == "vowelshift":
                words = [w.translate(VOWEL_SHIFT) for w in words]
        return " ".join(words) + "."

    def stream(self, seed: int, style: str | None, chars: int) -> str:
        rng = random.Random(seed)
        out, length = [], 0
        while length < chars:
            s = self.render(self.sentence(rng), style)
            out.append(s)
            length += len(s) + 1
        return " ".join(out)[:chars]


def encode(text: str) -> torch.Tensor:
    table = {c: i for i, c in enumerate(CHARS)}
    return torch.tensor([table[c] for c in text], dtype=torch.long)


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, c // self.n_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    def __init__(self, dim: int, layers: int, n_heads: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(len(CHARS), dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, n_heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(CHARS))
        # style tags for `lora_tag`: fixed random vectors of a token embedding's scale, never trained,
        # outside the state dict, drawn from their own generator (the pretrained weights do not change)
        tags = torch.randn(K, dim, generator=torch.Generator().manual_seed(12345))
        self.register_buffer("tags", tags, persistent=False)

    def forward(self, idx: torch.Tensor, tags: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        if tags is not None:  # the style tag is added to the first position, which every later one sees
            x = torch.cat([x[:, :1] + self.tags[tags][:, None], x[:, 1:]], 1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


@dataclass
class CharLMSize(Size):
    dim: int = 64
    layers: int = 4
    n_heads: int = 4
    context: int = 64
    pretrain_chars: int = 600_000
    train_chars: int = 60_000     # per style
    eval_chars: int = 16_000      # per style, validation and test each


# lrs: a probe at 400 steps gave LoRA val 1.88 / 1.61 / 1.37 / 1.32 / 2.58 (diverged) at lr 1e-3 / 3e-3 /
# 1e-2 / 3e-2 / 1e-1, and HydraLoRA N=4 1.37 at 3e-2 and 2.65 (diverged) at 1e-1: the sweep takes the two best
CHARLM_DEFAULT = CharLMSize(steps=500, batch=32, lora_rank=13, lrs=(1e-2, 3e-2), seeds=3,
                            pretrain_steps=1000, pretrain_batch=64, pretrain_lr=3e-3)
CHARLM_QUICK = CharLMSize(steps=20, batch=16, lora_rank=13, lrs=(3e-3,), seeds=1, pretrain_steps=60,
                          pretrain_batch=32, pretrain_lr=3e-3, dim=32, layers=2, n_heads=2, context=32,
                          pretrain_chars=40_000, train_chars=6_000, eval_chars=1_500)


class CharLMTask(Task):
    name = "charlm"
    supports_tags = True
    styles = TEXT_STYLES
    targets = ("qkv", "proj", "fc1", "fc2")

    def __init__(self, size: CharLMSize) -> None:
        self.size = size
        lang = Language(0)
        self.pretrain_stream = encode(lang.stream(1000, None, size.pretrain_chars))
        # train / val / test: different sentences (other seeds) of the same language and styles
        self.streams = {split: [encode(lang.stream(seed + 10 * k, style, chars)) for k, style in enumerate(self.styles)]
                        for split, seed, chars in (("train", 2000, size.train_chars), ("val", 3000, size.eval_chars),
                                                   ("test", 4000, size.eval_chars))}

    def cache_key(self) -> dict:
        s = self.size
        return {k: getattr(s, k) for k in ("dim", "layers", "n_heads", "context", "pretrain_chars", "pretrain_steps",
                                           "pretrain_batch", "pretrain_lr")}

    def make_model(self) -> nn.Module:
        s = self.size
        return CharLM(s.dim, s.layers, s.n_heads, s.context)

    def _windows(self, stream: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = stream[starts[:, None] + torch.arange(self.size.context + 1)[None]]
        return chunk[:, :-1], chunk[:, 1:]

    def pretrain_batch(self, gen: torch.Generator) -> tuple:
        starts = torch.randint(0, len(self.pretrain_stream) - self.size.context - 1, (self.size.pretrain_batch,),
                               generator=gen)
        return self._windows(self.pretrain_stream, starts)

    def train_batch(self, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        styles = torch.randint(0, len(self.styles), (self.size.batch,), generator=gen)
        pairs = []
        for k in styles.tolist():
            stream = self.streams["train"][k]
            pairs.append(self._windows(stream, torch.randint(0, len(stream) - self.size.context - 1, (1,),
                                                             generator=gen)))
        return (torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])), styles

    def eval_batch(self, split: str, k: int) -> tuple:
        stream = self.streams[split][k]
        return self._windows(stream, torch.arange(0, len(stream) - self.size.context - 1, self.size.context))

    def loss(self, model: nn.Module, inputs: tuple, tags: torch.Tensor | None = None) -> torch.Tensor:
        x, y = inputs
        return F.cross_entropy(model(x, tags).flatten(0, 1), y.flatten())


# ---------------------------------------------------------------------------------------------
# Task "video": a tiny HunyuanVideo transformer, rectified flow, four synthetic animation styles
# ---------------------------------------------------------------------------------------------
VIDEO_STYLES = ("twos", "outline", "palette", "mirror")
# the Linear modules `ptta train` adapts (ptta.config.DEFAULT_TARGET_MODULES), written out here so
# that this benchmark does not depend on the example package
VIDEO_TARGETS = (r"(single_)?transformer_blocks\.\d+\."
                 r"(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_out\.0|to_add_out)"
                 r"|(norm1|norm1_context|norm)\.linear|(ff|ff_context)\.net\.(0\.proj|2)|proj_mlp|proj_out)")


@dataclass
class VideoSize(Size):
    heads: int = 2
    head_dim: int = 16
    layers: int = 2
    single_layers: int = 2
    frames: int = 4
    side: int = 8
    text_tokens: int = 8
    text_dim: int = 32
    train_videos: int = 512       # per style
    eval_videos: int = 64         # per style, validation and test each


# lrs: a probe (300 steps, val) gave LoRA 0.234 / 0.216 / 0.194 / 0.269 at lr 1e-3 / 3e-3 / 1e-2 / 3e-2 and
# HydraLoRA N=4 0.242 / 0.219 / 0.191 / 0.201: the sweep brackets 1e-2
VIDEO_DEFAULT = VideoSize(heads=3, steps=300, batch=16, lora_rank=19, lrs=(5e-3, 1e-2, 2e-2), seeds=3, pretrain_steps=1500,
                          pretrain_batch=32, pretrain_lr=2e-3)
VIDEO_QUICK = VideoSize(steps=10, batch=8, lora_rank=19, lrs=(3e-3,), seeds=1, pretrain_steps=20, pretrain_batch=8,
                        pretrain_lr=2e-3, layers=1, single_layers=1, train_videos=32, eval_videos=8)
CONTENT_DIM = 15


class VideoTask(Task):
    name = "video"
    styles = VIDEO_STYLES
    targets = VIDEO_TARGETS

    def __init__(self, size: VideoSize) -> None:
        self.size = size
        gen = torch.Generator().manual_seed(0)
        # the "text encoder": fixed random maps from the content parameters to prompt tokens and the
        # pooled embedding; one more prompt token names the style (index 0 = none, in pretraining)
        self.text_maps = torch.randn(size.text_tokens - 1, CONTENT_DIM, size.text_dim, generator=gen) / CONTENT_DIM ** 0.5
        self.pooled_map = torch.randn(CONTENT_DIM, size.head_dim, generator=gen) / CONTENT_DIM ** 0.5
        self.style_tokens = torch.randn(len(self.styles) + 1, size.text_dim, generator=gen)
        self.palette = torch.randperm(4, generator=gen)
        while bool((self.palette == torch.arange(4)).any()):
            self.palette = torch.randperm(4, generator=gen)
        self.pretrain_pool = self._videos(4096, seed=1, style=None)
        self.pools = {split: [self._videos(n, seed + k, style) for k, style in enumerate(self.styles)]
                      for split, seed, n in (("train", 100, size.train_videos), ("val", 200, size.eval_videos),
                                             ("test", 300, size.eval_videos))}
        # evaluation: fixed noise and noise levels spread evenly over (0, 1)
        self.eval_sets = {}
        for split in ("val", "test"):
            egen = torch.Generator().manual_seed(400 if split == "val" else 500)
            self.eval_sets[split] = []
            for k in range(len(self.styles)):
                x0, prompt, pooled = self.pools[split][k]
                sigma = (torch.randperm(len(x0), generator=egen).float() + 0.5) / len(x0)
                self.eval_sets[split].append(self._noisy(x0, prompt, pooled, sigma, egen))

    def cache_key(self) -> dict:
        s = self.size
        return {k: getattr(s, k) for k in ("heads", "head_dim", "layers", "single_layers", "frames", "side",
                                           "text_tokens", "text_dim", "pretrain_steps", "pretrain_batch",
                                           "pretrain_lr")}

    def make_model(self) -> nn.Module:
        from diffusers import HunyuanVideoTransformer3DModel

        s = self.size
        t_axis = s.head_dim // 8 * 2  # rope axes (t, h, w): even sizes summing to head_dim, (4, 6, 6) for 16
        return HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=s.heads, attention_head_dim=s.head_dim,
            num_layers=s.layers, num_single_layers=s.single_layers, num_refiner_layers=1, patch_size=2,
            patch_size_t=1, guidance_embeds=False, text_embed_dim=s.text_dim, pooled_projection_dim=s.head_dim,
            rope_axes_dim=(t_axis, (s.head_dim - t_axis) // 2, (s.head_dim - t_axis) // 2))

    def _videos(self, n: int, seed: int, style: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents (n, 4, T, S, S), prompt tokens (n, L, D), pooled (n, P)) of n random contents."""
        s = self.size
        gen = torch.Generator().manual_seed(seed)
        u = lambda *shape: torch.rand(*shape, generator=gen)
        center = 1.5 + (s.side - 4) * u(n, 2)
        velocity = (u(n, 2) - 0.5) * 2.0
        radius = 1.0 + u(n, 1)
        colour = torch.randn(n, 4, generator=gen)
        colour = 1.5 * colour / colour.norm(dim=1, keepdim=True)
        background = 0.5 * torch.randn(n, 4, generator=gen)
        angle = 2 * math.pi * u(n, 1)
        content = torch.cat([center / s.side, velocity, radius - 1.5, colour, background, angle.cos(), angle.sin()], 1)
        t = torch.arange(s.frames).float()
        if style == "twos":
            t = (t // 2) * 2
        elif style == "mirror":
            t = t.flip(0)
        grid = torch.arange(s.side).float()
        pos = center[:, None, :] + velocity[:, None, :] * t[None, :, None]          # (n, T, 2)
        dy = grid[None, None, :, None] - pos[:, :, 1, None, None]
        dx = grid[None, None, None, :] - pos[:, :, 0, None, None]
        dist2 = dy ** 2 + dx ** 2                                                    # (n, T, S, S)
        r = radius[:, :, None, None]
        if style == "outline":
            shape = torch.exp(-((dist2.sqrt() - r) ** 2) / (2 * 0.35 ** 2))
        else:
            shape = torch.exp(-dist2 / (2 * r ** 2))
        ramp = ((grid[:, None] - (s.side - 1) / 2) * angle.cos()[:, :, None]
                + (grid[None, :] - (s.side - 1) / 2) * angle.sin()[:, :, None]) / (s.side / 2)  # (n, S, S)
        video = colour[:, :, None, None, None] * shape[:, None] + background[:, :, None, None, None] * ramp[:, None, None]
        if style == "palette":
            video = (video[:, self.palette] * 2).round() / 2
        elif style == "mirror":
            video = video.flip(-1)
        style_index = 0 if style is None else 1 + self.styles.index(style)
        tokens = torch.einsum("nc,lcd->nld", content, self.text_maps).tanh()
        style_token = self.style_tokens[style_index].expand(n, 1, s.text_dim)
        prompt = torch.cat([tokens, style_token], 1)
        pooled = (content @ self.pooled_map).tanh()
        return video, prompt, pooled

    def _noisy(self, x0, prompt, pooled, sigma, gen) -> tuple:
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        return ((1 - s) * x0 + s * noise, sigma * 1000.0, prompt, pooled, noise - x0)

    def _sample(self, pool, idx, gen) -> tuple:
        x0, prompt, pooled = (t[idx] for t in pool)
        sigma = torch.sigmoid(torch.randn(len(idx), generator=gen))  # logit-normal(0, 1)
        return self._noisy(x0, prompt, pooled, sigma, gen)

    def pretrain_batch(self, gen: torch.Generator) -> tuple:
        idx = torch.randint(0, len(self.pretrain_pool[0]), (self.size.pretrain_batch,), generator=gen)
        return self._sample(self.pretrain_pool, idx, gen)

    def train_batch(self, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        styles = torch.randint(0, len(self.styles), (self.size.batch,), generator=gen)
        idx = torch.randint(0, self.size.train_videos, (self.size.batch,), generator=gen)
        parts = [self._sample(self.pools["train"][k], idx[i:i + 1], gen) for i, k in enumerate(styles.tolist())]
        return tuple(torch.cat([p[j] for p in parts]) for j in range(5)), styles

    def eval_batch(self, split: str, k: int) -> tuple:
        return self.eval_sets[split][k]

    def loss(self, model: nn.Module, inputs: tuple, tags: torch.Tensor | None = None) -> torch.Tensor:
        noisy, timestep, prompt, pooled, target = inputs
        mask = torch.ones(prompt.shape[:2], dtype=torch.long)
        prediction = model(hidden_states=noisy, timestep=timestep, encoder_hidden_states=prompt,
                           encoder_attention_mask=mask, pooled_projections=pooled, return_dict=False)[0]
        return F.mse_loss(prediction, target)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} CPU cores, {cpu}"


class Recorder:
    def __init__(self, csv_path: Path, task: Task, size_name: str) -> None:
        self.csv_path, self.task = csv_path, task
        now = datetime.datetime.now(datetime.timezone.utc)
        self.common = {"run_id": now.strftime("%Y%m%dT%H%M%S"), "date": now.strftime("%Y-%m-%d %H:%M UTC"),
                       "commit": git_commit(), "machine": machine_description(), "torch": torch.__version__,
                       "task": task.name, "size": size_name}
        self.rows: list[dict] = []

    def add(self, method: Method, trainable: int, budget: int, lr: float, seed: int, phase: str, split: str,
            result: dict, steps: int, wall: float) -> None:
        styles = self.task.styles
        base = {**self.common, "method": method.name, "mixing": method.mixing, "heads": method.heads,
                "rank": method.rank, "trainable_params": trainable, "params_vs_lora": f"{trainable / budget:.3f}",
                "lr": lr, "seed": seed, "phase": phase, "split": split, "steps": steps, "wall_s": f"{wall:.1f}"}
        rows = [{**base, "metric": "loss", "style": styles[k], "head": "", "value": f"{v:.6g}"}
                for k, v in enumerate(result["loss"])]
        rows.append({**base, "metric": "loss", "style": "mean", "head": "", "value": f"{statistics.fmean(result['loss']):.6g}"})
        for layer, (mi, name) in enumerate(zip(result.get("mi", []), result.get("layers", []))):
            rows.append({**base, "metric": "mi_bits", "style": "", "head": f"layer{layer}:{name}", "value": f"{mi:.6f}"})
        for k, row in enumerate(result.get("forced", [])):
            for j, v in enumerate(row):
                rows.append({**base, "metric": "forced_head_loss", "style": styles[k], "head": j, "value": f"{v:.6g}"})
        append_rows(self.csv_path, COLUMNS, rows)
        self.rows.extend(rows)


_TASK: Task | None = None  # the task of the forked workers


_START = [time.perf_counter()]


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START[0]:6.0f} s] {message}", flush=True)


def _init_worker() -> None:
    torch.set_num_threads(1)  # two single-threaded runs at once use two cores better than one run on two
    warnings.filterwarnings("ignore", message=".*HydraLoRA.*")


def _job(job: tuple[Method, float, int, tuple[str, ...]]) -> tuple[dict, int, float]:
    method, lr, seed, splits = job
    return _TASK.train(method, lr, seed, splits)


_PRETRAIN: list[Task] = []  # the tasks the forked pretraining workers read


def _pretrain(index: int) -> None:
    _PRETRAIN[index].pretrained(log)


def run_jobs(jobs: list, workers: int, log, describe) -> list:
    """Run the jobs on `workers` forked processes; results in job order, each logged as it ends."""
    results: list = [None] * len(jobs)
    if workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = _job(job)
            log(describe(job, results[i]))
        return results
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_init_worker) as pool:
        futures = {pool.submit(_job, job): i for i, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            log(describe(jobs[i], results[i]))
    return results


def run_task(task: Task, args, log) -> list[dict]:
    global _TASK
    size = task.size
    task.base_state = task.pretrained(log)
    base = task.make_model()
    base.load_state_dict(task.base_state)
    base_result = task.evaluate(base, None, "test", specialisation=False)
    log(f"{task.name}: test loss per style before adaptation {[round(v, 4) for v in base_result['loss']]}")
    methods, budget = build_methods(task.make_model, task.targets, size.lora_rank, args.methods, task.supports_tags)
    for m in methods:
        log(f"  {m.name}: N={m.heads} r={m.rank} mixing={m.mixing}{' (supervised heads)' if m.supervised else ''}")
    recorder = Recorder(args.csv, task, "quick" if args.quick else "default")
    recorder.add(Method("base", 0, "none", 0), 0, budget, 0.0, 0, "final", "test", base_result, 0, 0.0)
    _TASK = task

    def describe(job, result) -> str:
        method, lr, seed, _ = job
        results, trainable, wall = result
        split = "val" if "val" in results else "test"
        return (f"  {task.name} {method.name} lr {lr:g} seed {seed}: {split} loss "
                f"{statistics.fmean(results[split]['loss']):.5f} ({wall:.0f} s, {trainable} params)")

    sweep_jobs = [(m, lr, 0, ("val", "test")) for m in methods for lr in size.lrs]
    log(f"{task.name}: lr sweep, {len(sweep_jobs)} runs of {size.steps} steps, {args.workers} at a time")
    sweep = dict(zip([(j[0].name, j[1]) for j in sweep_jobs], run_jobs(sweep_jobs, args.workers, log, describe)))
    best_lr = {}
    for m in methods:
        best_lr[m.name] = min(size.lrs, key=lambda lr: statistics.fmean(sweep[(m.name, lr)][0]["val"]["loss"]))
        for lr in size.lrs:
            results, trainable, wall = sweep[(m.name, lr)]
            recorder.add(m, trainable, budget, lr, 0, "lr_sweep", "val", results["val"], size.steps, wall)
    edge = [name for name, lr in best_lr.items() if len(size.lrs) > 2 and lr in (min(size.lrs), max(size.lrs))]
    if edge:
        log(f"{task.name}: the lr chosen for {edge} is at the edge of the grid {size.lrs}")
    seed_jobs = [(m, best_lr[m.name], seed, ("test",)) for m in methods for seed in range(1, size.seeds)]
    log(f"{task.name}: {len(seed_jobs)} more seeds at the chosen lrs {best_lr}")
    seeded = run_jobs(seed_jobs, args.workers, log, describe)
    for m in methods:
        results, trainable, wall = sweep[(m.name, best_lr[m.name])]
        recorder.add(m, trainable, budget, best_lr[m.name], 0, "final", "test", results["test"], size.steps, wall)
        for job, (results, trainable, wall) in zip(seed_jobs, seeded):
            if job[0] == m:
                recorder.add(m, trainable, budget, job[1], job[2], "final", "test", results["test"], size.steps, wall)
    summarise(task, recorder.rows, log)
    return recorder.rows


def summarise(task: Task, rows: list[dict], log) -> None:
    """Log the test loss, mean +- std over seeds, per method and style, and the specialisation."""
    finals = [r for r in rows if r["phase"] == "final" and r["metric"] == "loss"]
    methods = list(dict.fromkeys(r["method"] for r in finals))
    styles = list(task.styles) + ["mean"]
    log(f"{task.name}: test loss, mean +- std over seeds")
    log("  " + "method".ljust(14) + "params".rjust(8) + "lr".rjust(8) + "".join(s.rjust(18) for s in styles))
    for m in methods:
        cells = []
        for s in styles:
            values = [float(r["value"]) for r in finals if r["method"] == m and r["style"] == s]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f}+-{spread:.4f}".rjust(18))
        first = next(r for r in finals if r["method"] == m)
        log("  " + m.ljust(14) + str(first["trainable_params"]).rjust(8) + f"{float(first['lr']):g}".rjust(8)
            + "".join(cells))
    for m in methods:
        mine = [r for r in rows if r["phase"] == "final" and r["method"] == m]
        per_seed: dict = {}
        for r in mine:
            if r["metric"] == "mi_bits":
                per_seed.setdefault(r["seed"], []).append(float(r["value"]))
        if per_seed:
            means = [statistics.fmean(v) for v in per_seed.values()]
            maxes = [max(v) for v in per_seed.values()]
            log(f"  {m}: I(style; head) {statistics.fmean(means):.4f} bits averaged over layers, "
                f"{statistics.fmean(maxes):.4f} in the most specialised layer (mean over seeds)")
        forced = [r for r in mine if r["metric"] == "forced_head_loss"]
        if forced:
            own = [float(r["value"]) for r in forced if task.styles.index(r["style"]) == int(r["head"])]
            other = [float(r["value"]) for r in forced if task.styles.index(r["style"]) != int(r["head"])]
            log(f"  {m}: loss with the style's own head forced {statistics.fmean(own):.4f}, "
                f"with another head {statistics.fmean(other):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("charlm", "video", "all"), default="charlm",
                        help="charlm (the default; 16 min on 2 unshared cores with the pretrained model cached, "
                             "measured), video (13-16 min, estimated), or all (both)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one lr, one seed: checks the harness")
    parser.add_argument("--csv", type=Path, default=RESULTS_CSV)
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, help="a subset of the methods")
    parser.add_argument("--lrs", nargs="+", type=float, help="learning rates swept per method")
    parser.add_argument("--seeds", type=int, help="seeds at the chosen lr")
    parser.add_argument("--steps", type=int, help="adaptation steps per run")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help=f"pretrained weights (default {CACHE_DIR})")
    args = parser.parse_args(argv)
    _START[0] = time.perf_counter()
    warnings.filterwarnings("ignore", message=".*HydraLoRA.*")  # the head-collapse notice for hydra_learned
    # one thread per process everywhere: on two cores shared with other work, two threads of one
    # process that wait for each other were seen to run 10-100x slower than one
    torch.set_num_threads(1)
    overrides = {k: v for k, v in (("lrs", tuple(args.lrs) if args.lrs else None), ("seeds", args.seeds),
                                   ("steps", args.steps)) if v}
    tasks = []
    if args.task in ("charlm", "all"):
        tasks.append(CharLMTask(replace(CHARLM_QUICK if args.quick else CHARLM_DEFAULT, **overrides)))
    if args.task in ("video", "all"):
        tasks.append(VideoTask(replace(VIDEO_QUICK if args.quick else VIDEO_DEFAULT, **overrides)))
    for task in tasks:
        task.cache_dir = args.cache_dir
    if len(tasks) > 1 and args.workers > 1:  # pretrain the tasks side by side; each run below reads the cache
        _PRETRAIN[:] = tasks
        with concurrent.futures.ProcessPoolExecutor(len(tasks), mp_context=multiprocessing.get_context("fork"),
                                                    initializer=_init_worker) as pool:
            list(pool.map(_pretrain, range(len(tasks))))
    for task in tasks:
        run_task(task, args, log)
    log(f"done, rows in {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
