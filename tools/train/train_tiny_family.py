#!/usr/bin/env python3
"""Train the bundled tiny DeepSeek-V3-architecture model family (runs on one GPU, a few minutes).

Steps:
 1. byte-level BPE tokenizer (HF tokenizers, vocab 1536) with DeepSeek-V3's pre-tokenizer
    (three Isolated Split regexes, then ByteLevel with use_regex false), special tokens
    <｜begin▁of▁sentence｜> (id 0) and <｜end▁of▁sentence｜> (id 1), a TemplateProcessing
    post-processor that prepends BOS, and a ByteLevel decoder  -> models/tokenizer.json
 2. a tiny MoE **base** (transformers DeepseekV3ForCausalLM; noaux_tc sigmoid routing with the
    auxiliary-loss-free bias update) on a prose+code mix            -> models/base
 3. two **parents** fine-tuned from the base: prose only, code only -> models/prose, models/code
 4. held-out loss per domain for each model, models/MODEL_CARD.md, models/prose/reference.json
    (fixture schema of tools/fixtures/make_fixtures.py), tests/fixtures/tokenizer/cases.json

Inputs: .corpus/ from tools/train/prepare_corpus.py, models/eval/*.txt (held-out eval text),
tools/fixtures/tokenizer_test_strings.json (optional).

Usage: python3 tools/train/train_tiny_family.py [--device cuda] [--base-tokens 16e6] ...
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
from make_fixtures import dump_reference  # noqa: E402

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
SEP = "\n\x1e\n"

# DeepSeek-V3's tokenizer.json pre_tokenizer, verbatim (deepseek-ai/DeepSeek-V3)
DSV3_PRE_TOKENIZER_JSON = r'''{
  "type": "Sequence",
  "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
    {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false},
    {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
  ]
}'''

MODEL_CONFIG = dict(
    vocab_size=1536, hidden_size=256, intermediate_size=512, moe_intermediate_size=96,
    num_hidden_layers=4, first_k_dense_replace=1, moe_layer_freq=1,
    num_attention_heads=4, num_key_value_heads=4,
    q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=4, topk_group=2,
    topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
    hidden_act="silu", max_position_embeddings=2048, rope_theta=10000.0, rope_scaling=None,
    rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
    bos_token_id=0, eos_token_id=1, pad_token_id=None, initializer_range=0.02, use_cache=True,
    num_nextn_predict_layers=0,
)

FALLBACK_TOKENIZER_STRINGS = [
    "", " ", "Hello, world!", "hello world", "  leading spaces", "trailing spaces   ",
    "tabs\tand\nnewlines\r\nand CRLF", "Numbers: 1 12 123 1234 12345 3.14159 1,000,000",
    "def f(x):\n    return x**2  # square\n", "if (a<=b && c!=d) { return; }",
    "émigré café naïve Zürich", "日本語のテキストと中文字符混合", "カタカナ ひらがな 漢字",
    "emoji 😀🚀 and symbols ©®™ ∑∫√", "don't won't it's I'm you're", "ALL CAPS and MiXeD CaSe",
    "___init___ __name__ == '__main__'", "multiple\n\n\nblank lines", "<｜begin▁of▁sentence｜>inline special",
    "a" * 50, "http://example.com/path?q=1&r=2#frag", "   \n\t  ",
]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
def train_tokenizer(texts, vocab_size, path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(json.loads(DSV3_PRE_TOKENIZER_JSON)["pretokenizers"][2]["pattern"]["Regex"]),
                             behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tok.token_to_id(BOS))])
    # make the pre_tokenizer JSON exactly DeepSeek-V3's and check it tokenizes identically
    d = json.loads(tok.to_str())
    d["pre_tokenizer"] = json.loads(DSV3_PRE_TOKENIZER_JSON)
    tok2 = Tokenizer.from_str(json.dumps(d, ensure_ascii=False))
    probe = texts[:200]
    assert [e.ids for e in tok.encode_batch(probe)] == [e.ids for e in tok2.encode_batch(probe)], \
        "patched pre_tokenizer tokenizes differently"
    assert tok2.token_to_id(BOS) == 0 and tok2.token_to_id(EOS) == 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(json.loads(tok2.to_str()), ensure_ascii=False, indent=2))
    return Tokenizer.from_file(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".corpus")
    ap.add_argument("--models", default="models")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--base-tokens", type=float, default=16e6)
    ap.add_argument("--prose-epochs", type=float, default=2.0)
    ap.add_argument("--code-epochs", type=float, default=1.5)
    ap.add_argument("--prose-share", type=float, default=0.25, help="share of prose rows in base batches")
    ap.add_argument("--time-budget", type=float, default=330.0, help="seconds of training, all phases")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ft-lr", type=float, default=6e-4)
    ap.add_argument("--bias-gamma", type=float, default=1e-3)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    t_start = time.time()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(args.device if torch.cuda.is_available() else "cpu")
    log(f"torch {torch.__version__} transformers {transformers.__version__} device {dev}")

    # ------------------------------------------------------------------ data + tokenizer
    def read_docs(name):
        with open(os.path.join(args.corpus, name), encoding="utf-8") as f:
            return [d for d in f.read().split(SEP) if d.strip()]

    docs = {d: read_docs(f"{d}_train.txt") for d in ("prose", "code")}
    manifest = json.load(open(os.path.join(args.corpus, "manifest.json")))
    os.makedirs(args.models, exist_ok=True)
    tok_path = os.path.join(args.models, "tokenizer.json")
    t0 = time.time()
    tok = train_tokenizer(docs["prose"] + docs["code"], MODEL_CONFIG["vocab_size"], tok_path)
    log(f"tokenizer: vocab {tok.get_vocab_size()} trained in {time.time() - t0:.1f}s")
    assert tok.get_vocab_size() <= MODEL_CONFIG["vocab_size"]

    def encode_stream(texts):
        ids = []
        for e in tok.encode_batch(texts):
            ids.extend(e.ids)  # each document starts with BOS (post-processor)
        return torch.tensor(ids, dtype=torch.long)

    streams = {d: encode_stream(docs[d]) for d in docs}
    eval_text = {d: open(os.path.join(args.models, "eval", f"{d}_heldout.txt"), encoding="utf-8").read()
                 for d in ("prose", "code")}
    eval_ids = {d: torch.tensor(tok.encode(eval_text[d]).ids, dtype=torch.long) for d in eval_text}
    for d in streams:
        nbytes = sum(len(t.encode()) for t in docs[d])
        log(f"{d}: train {len(streams[d])} tokens ({nbytes / len(streams[d]):.2f} bytes/token), "
            f"eval {len(eval_ids[d])} tokens")
    gstreams = {d: s.to(dev) for d, s in streams.items()}

    # ------------------------------------------------------------------ model
    cfg = DeepseekV3Config(**MODEL_CONFIG)
    cfg.architectures = ["DeepseekV3ForCausalLM"]

    def new_model():
        torch.manual_seed(0)
        return DeepseekV3ForCausalLM(cfg).to(dev)

    model = new_model()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params {n_params / 1e6:.3f}M")
    assert n_params < 4e6

    gen = torch.Generator(device="cpu").manual_seed(1234)
    arange = torch.arange(args.seq + 1, device=dev)

    def batch(mix):
        rows = []
        for d, n in mix:
            if n == 0:
                continue
            s = gstreams[d]
            starts = torch.randint(0, len(s) - args.seq - 1, (n,), generator=gen).to(dev)
            rows.append(s[starts[:, None] + arange[None, :args.seq]])
        return torch.cat(rows, 0)

    gates = [l.mlp.gate for l in model.model.layers if hasattr(l.mlp, "gate")]

    def topk_ids_in(obj):
        """The [tokens, top_k] integer tensor of chosen experts inside a router output, if any."""
        items = list(obj) if isinstance(obj, (tuple, list)) else [obj]
        for t in items:
            if torch.is_tensor(t) and not t.is_floating_point() and t.dim() == 2 and \
                    t.shape[-1] == cfg.num_experts_per_tok:
                return t
        return None

    def watch_routing(m, on_ids):
        """Calls on_ids(layer, ids) with each MoE layer's chosen experts, whatever the transformers version
        returns them from (MoE.route_tokens_to_experts in 5.x, the gate's output tuple in 4.x)."""
        undo = []
        for L, layer in enumerate(m.model.layers):
            mlp = layer.mlp
            if not hasattr(mlp, "gate"):
                continue
            if hasattr(mlp, "route_tokens_to_experts"):
                orig = mlp.route_tokens_to_experts

                def wrapped(*a, _orig=orig, _L=L, **k):
                    out = _orig(*a, **k)
                    ids = topk_ids_in(out)
                    if ids is not None:
                        on_ids(_L, ids)
                    return out
                mlp.route_tokens_to_experts = wrapped
                undo.append(lambda mlp=mlp: delattr(mlp, "route_tokens_to_experts"))
            else:
                def hook(mod, inp, out, _L=L):
                    ids = topk_ids_in(out)
                    if ids is not None:
                        on_ids(_L, ids)
                h = mlp.gate.register_forward_hook(hook)
                undo.append(h.remove)
        return undo

    def attach_load_counters(m):
        layers = [L for L, l in enumerate(m.model.layers) if hasattr(l.mlp, "gate")]
        gs = [m.model.layers[L].mlp.gate for L in layers]
        counts = {L: torch.zeros(cfg.n_routed_experts, device=dev) for L in layers}

        def on_ids(L, ids):
            if m.training:
                counts[L] += torch.bincount(ids.flatten(), minlength=cfg.n_routed_experts).float()
        undo = watch_routing(m, on_ids)
        return gs, [counts[L] for L in layers], undo

    def make_opt(m, lr):
        decay = [p for n, p in m.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in m.named_parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")

    def train_phase(m, name, mix, steps, lr, warmup, time_limit):
        m.train()
        opt = make_opt(m, lr)
        gs, counts, hs = attach_load_counters(m)

        def lr_at(s):
            if s < warmup:
                return lr * (s + 1) / warmup
            p = (s - warmup) / max(1, steps - warmup)
            return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
        tokens_per_step = sum(n for _, n in mix) * args.seq
        t0 = time.time()
        ema, done, last_print = None, 0, t0
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            x = batch(mix)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = m(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            with torch.no_grad():  # DeepSeek-V3 auxiliary-loss-free balancing: bias += gamma * sign(mean - load)
                for g, c in zip(gs, counts):
                    g.e_score_correction_bias += args.bias_gamma * torch.sign(c.mean() - c)
                    c.zero_()
            done = step + 1
            if step % 25 == 0 or step == steps - 1:
                lv = float(loss.detach())
                ema = lv if ema is None else 0.9 * ema + 0.1 * lv
                el = time.time() - t0
                log(f"[{name}] step {step:5d}/{steps} loss {lv:.4f} (ema {ema:.4f}) lr {lr_at(step):.2e} "
                    f"tok/s {done * tokens_per_step / el:,.0f} elapsed {el:.1f}s")
                if el > time_limit:
                    log(f"[{name}] time limit {time_limit:.0f}s reached at step {done}")
                    break
        for undo in hs:
            undo()
        m.eval()
        torch.cuda.synchronize() if dev.type == "cuda" else None
        return {"steps": done, "planned_steps": steps, "tokens": done * tokens_per_step, "seconds": time.time() - t0,
                "final_train_loss_ema": ema, "peak_lr": lr, "warmup": warmup,
                "batch_rows": {d: n for d, n in mix}, "seq": args.seq}

    # experts implementation: try grouped_mm (fast), else eager
    impl = "eager"
    for cand in ("grouped_mm", "eager"):
        try:
            cfg._experts_implementation = cand
            bm = new_model()
            bm.train()
            x = batch([("code", 8)])
            for _ in range(3):
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    bm(input_ids=x, labels=x).loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            impl = cand
            del bm
            break
        except Exception as e:  # noqa
            log(f"experts implementation {cand} failed: {type(e).__name__}: {e}")
    cfg._experts_implementation = impl
    log(f"experts implementation for training: {impl}")
    model = new_model()

    budget = args.time_budget
    rows = args.batch
    n_prose = int(round(rows * args.prose_share))
    base_steps = int(args.base_tokens // (rows * args.seq))
    phases = {}
    phases["base"] = train_phase(model, "base", [("prose", n_prose), ("code", rows - n_prose)], base_steps,
                                 args.lr, 100, budget * 0.6)
    base_state = copy.deepcopy(model.state_dict())
    children = {}
    for d, epochs in (("prose", args.prose_epochs), ("code", args.code_epochs)):
        m = new_model()
        m.load_state_dict(base_state)
        steps = max(20, int(epochs * len(streams[d]) // (rows * args.seq)))
        phases[d] = train_phase(m, d, [(d, rows)], steps, args.ft_lr, 20, budget * 0.2)
        children[d] = m
    children["base"] = model

    # ------------------------------------------------------------------ save, reload checks, eval
    cfg_saved = {}
    results = {}
    failures = []
    warnings_ = []
    probe = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.\ndef main():\n    pass").ids])

    def cast_like_loaded(src, dt):
        """CPU copy of `src` in dtype dt, keeping in float32 what from_pretrained keeps in float32: the
        router's e_score_correction_bias and the rotary inv_freq (not saved; recomputed at load in fp32)."""
        dst = copy.deepcopy(src).cpu().to(dt)
        for n, b in src.named_buffers():
            if n.endswith("e_score_correction_bias") or n.endswith("inv_freq"):
                mod_name, _, attr = n.rpartition(".")
                setattr(dst.get_submodule(mod_name), attr, b.detach().float().cpu().clone())
        return dst

    def force_eager(m):
        for meth in ("set_attn_implementation", "set_experts_implementation"):
            f = getattr(m, meth, None)
            if f is not None:
                try:
                    f("eager")
                except Exception as e:  # noqa
                    log(f"{meth}('eager') failed: {e}")
        for attr in ("_attn_implementation", "_experts_implementation"):
            try:
                setattr(m.config, attr, "eager")
            except Exception as e:  # noqa
                log(f"config.{attr} = 'eager' failed: {e}")
        return m

    def eval_loss(m, ids):
        m.eval()
        total, count = 0.0, 0
        L = args.seq
        with torch.no_grad():
            for i in range(0, len(ids) - 1, L):
                x = ids[i:i + L + 1]
                if len(x) < 2:
                    break
                inp = x[:-1][None].to(dev)
                logits = m(input_ids=inp, use_cache=False).logits.float()[0]
                total += float(torch.nn.functional.cross_entropy(logits, x[1:].to(dev), reduction="sum"))
                count += len(x) - 1
        return total / count, total

    for name in ("base", "prose", "code"):
        m = children[name]
        d = os.path.join(args.models, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        mb = cast_like_loaded(m, torch.bfloat16)
        mb.config._experts_implementation = "eager"
        mb.generation_config.eos_token_id = cfg.eos_token_id
        mb.generation_config.bos_token_id = cfg.bos_token_id
        mb.save_pretrained(d)
        shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
        # reload check: same kernels on both sides (eager attention, eager experts), CPU, bf16 and float32
        for dt in (torch.bfloat16, torch.float32):
            mine = force_eager(cast_like_loaded(mb, dt))
            back = force_eager(DeepseekV3ForCausalLM.from_pretrained(d, dtype=dt, attn_implementation="eager"))
            mine.eval()
            back.eval()
            with torch.no_grad():
                a = mine(input_ids=probe, use_cache=False).logits
                b = back(input_ids=probe, use_cache=False).logits
            same = torch.equal(a, b)
            log(f"{name}: reload check {dt}: identical={same}")
            if not same:  # asserted at the end, after everything is written
                ta = dict(mine.state_dict(), **{"buf:" + k: v for k, v in mine.named_buffers()})
                tb = dict(back.state_dict(), **{"buf:" + k: v for k, v in back.named_buffers()})
                diff = [k for k in ta if k not in tb or ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
                log(f"  differing tensors/buffers: {diff[:12]} (+{max(0, len(diff) - 12)}); "
                    f"dtypes {[(k, str(ta[k].dtype), str(tb[k].dtype) if k in tb else None) for k in diff[:6]]}")
                persistent = [k for k in diff if not k.startswith("buf:") or k[4:] in ta]
                msg = f"{name}: reload differs in {dt} (max {float((a - b).abs().max())}); differing: {diff[:6]}"
                if dt == torch.float32 or persistent:
                    failures.append(msg)
                else:
                    warnings_.append(msg + " (non-persistent buffers only: load-time behaviour, not the file)")
        size = os.path.getsize(os.path.join(d, "model.safetensors"))
        if size >= 8e6:
            failures.append(f"{name}: {size} bytes")
        # held-out loss of the shipped (bf16) weights, evaluated in float32
        m32 = DeepseekV3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").to(dev)
        res = {}
        for dom in ("prose", "code"):
            nats, total = eval_loss(m32, eval_ids[dom])
            res[dom] = {"loss": nats, "bits_per_byte": total / math.log(2) / len(eval_text[dom].encode("utf-8"))}
        results[name] = dict(res, file_bytes=size)
        cfg_saved[name] = json.load(open(os.path.join(d, "config.json")))
        log(f"{name}: held-out prose {res['prose']['loss']:.4f} nats/tok ({res['prose']['bits_per_byte']:.3f} bpb), "
            f"code {res['code']['loss']:.4f} nats/tok ({res['code']['bits_per_byte']:.3f} bpb); {size} bytes")
        del m32

    # ------------------------------------------------------------------ prose reference (CPU, float32)
    ref_model = DeepseekV3ForCausalLM.from_pretrained(os.path.join(args.models, "prose"), dtype=torch.float32,
                                                      attn_implementation="eager")
    ref_model.eval()
    ref_model.generation_config.eos_token_id = None
    ref_model.generation_config.pad_token_id = 0
    ref_prompts = ["The meaning of life is",
                   "A fool and his money are soon parted, but a wise man knows that the best things in life"]
    cases = []
    torch.use_deterministic_algorithms(True)
    for text in ref_prompts:
        ids = tok.encode(text).ids
        captured = {}
        undo = watch_routing(ref_model, lambda L, ids: captured.__setitem__(L, torch.sort(ids, -1).values.tolist()))
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = ref_model(input_ids=x, use_cache=False).logits[0].float()
        for u in undo:
            u()
        if sorted(captured) != [L for L in range(cfg.num_hidden_layers) if L >= cfg.first_k_dense_replace]:
            failures.append(f"router capture saw layers {sorted(captured)}")
        with torch.no_grad():
            out = ref_model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                     max_new_tokens=16, eos_token_id=None, pad_token_id=0)
        greedy = out[0, len(ids):].tolist()
        manual = list(ids)
        with torch.no_grad():
            for _ in range(16):
                manual.append(int(torch.argmax(ref_model(input_ids=torch.tensor([manual]), use_cache=False).logits[0, -1])))
        if greedy != manual[len(ids):]:
            failures.append(f"generate {greedy} != manual {manual[len(ids):]}")
        log(f"reference prompt {text!r}: greedy continuation {tok.decode(greedy)!r}")
        cases.append({"prompt_ids": ids, "logits": logits.numpy().tolist(),
                      "router_topk": {str(L): v for L, v in sorted(captured.items())}, "greedy_ids": greedy,
                      "_text": text, "_continuation": tok.decode(greedy)})
    dump_reference(os.path.join(args.models, "prose", "reference.json"),
                   f"transformers {transformers.__version__} DeepseekV3ForCausalLM, float32 on CPU", "float32",
                   cases)

    # ------------------------------------------------------------------ tokenizer cases
    strings, src = [], "built-in strings (tools/fixtures/tokenizer_test_strings.json absent)"
    sp = os.path.join(HERE, "..", "fixtures", "tokenizer_test_strings.json")
    if os.path.exists(sp):
        data = json.load(open(sp, encoding="utf-8"))
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [])
        for item in data:
            if isinstance(item, str):
                strings.append(item)
            elif isinstance(item, dict):
                for k in ("text", "input", "string", "s"):
                    if isinstance(item.get(k), str):
                        strings.append(item[k])
                        break
        src = "tools/fixtures/tokenizer_test_strings.json"
    if not strings:
        strings = list(FALLBACK_TOKENIZER_STRINGS)
    for dom in ("prose", "code"):
        paras = [p for p in eval_text[dom].split("\n\n") if 40 < len(p) < 1500]
        strings += paras[:3]
    tcases, roundtrip_fail = [], 0
    for s in strings:
        e = tok.encode(s)
        tcases.append({"text": s, "ids": e.ids})
        if tok.decode(e.ids, skip_special_tokens=True) != s:
            roundtrip_fail += 1
            log(f"decode(encode(s)) != s for {s!r}: {tok.decode(e.ids, skip_special_tokens=True)!r}")
    os.makedirs("tests/fixtures/tokenizer", exist_ok=True)
    with open("tests/fixtures/tokenizer/cases.json", "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "models/tokenizer.json", "cases": tcases}, f, ensure_ascii=False, indent=1)
    log(f"tokenizer cases: {len(tcases)} from {src}; decode round-trip failures {roundtrip_fail}")

    # ------------------------------------------------------------------ model card
    total_s = time.time() - t_start
    write_card(args, manifest, cfg_saved["base"], n_params, phases, results, impl, tok, streams, eval_ids,
               transformers.__version__, torch.__version__, total_s, cases, src, len(tcases))
    summary = {"phases": phases, "results": results, "params": n_params, "experts_implementation": impl,
               "reload_check_warnings": warnings_, "failures": failures,
               "total_seconds": total_s, "config": cfg_saved["base"]}
    with open(os.path.join(args.models, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    log(json.dumps({k: results[k] for k in results}, indent=1))
    log(f"done in {total_s:.0f}s; warnings: {warnings_}; failures: {failures}")
    assert not failures, failures


def write_card(args, manifest, cfg, n_params, phases, results, impl, tok, streams, eval_ids, tv, torchv,
               total_s, cases, tsrc, ntc):
    gpu = "cpu"
    try:
        import torch
        gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa
        pass
    L = []
    L.append("# Bundled tiny DeepSeek-V3-architecture models\n")
    L.append("Three small Mixture-of-Experts language models with the DeepSeek-V3 architecture (MLA attention, "
             "`noaux_tc` sigmoid routing with group limit, shared expert, first layer dense), trained with Hugging Face "
             "transformers so that the engine can be run end to end on real (if tiny) weights:\n")
    L.append("| model | what | trained from |\n|---|---|---|")
    L.append("| `base` | prose + code mix | scratch |")
    L.append("| `prose` | parent specialised on English prose | `base` |")
    L.append("| `code` | parent specialised on Python code | `base` |\n")
    L.append("Each directory holds `config.json`, `model.safetensors` (bf16, per-expert HF layout "
             "`model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight`), `generation_config.json` and a copy of "
             "`tokenizer.json`. They are toys: useful for correctness tests, routing statistics and merging / "
             "λ-sweep experiments, not for text quality.\n")
    L.append("## Corpora\n")
    for d in ("prose", "code"):
        m = manifest[d]
        L.append(f"- **{d}**: `{m['source']}` — {m['docs_total']} documents; train {m['train_docs']} docs / "
                 f"{m['train_bytes']:,} bytes / {len(streams[d]):,} tokens; held-out {m['heldout_docs']} docs / "
                 f"{m['heldout_bytes']:,} bytes.")
    L.append(f"- Split: {manifest['split']}. Prose = Debian `fortunes` entries (% separators stripped, overstrike "
             "removed, `ascii-art` skipped); code = Python 3.11 standard library `.py` files (tests, "
             "lib2to3, idlelib tests, files > 150 KB skipped).")
    L.append(f"- Evaluation text (committed): `models/eval/prose_heldout.txt` ({len(eval_ids['prose']):,} tokens) and "
             f"`models/eval/code_heldout.txt` ({len(eval_ids['code']):,} tokens), whole held-out documents only.\n")
    L.append("## Tokenizer (`models/tokenizer.json`)\n")
    L.append(f"Byte-level BPE trained with HF `tokenizers` on both train splits, vocab {tok.get_vocab_size()} "
             "(min frequency 2). Pre-tokenizer copied verbatim from DeepSeek-V3's `tokenizer.json`: a `Sequence` of "
             "three `Split` regexes (`\\p{N}{1,3}`; CJK/kana runs; the letters/punctuation/whitespace pattern), all "
             "`Isolated`, then `ByteLevel` with `add_prefix_space: false, use_regex: false`. No normalizer. "
             "Special tokens `<｜begin▁of▁sentence｜>` = 0 and `<｜end▁of▁sentence｜>` = 1; the post-processor "
             "(`TemplateProcessing`) prepends BOS to every encoding; `ByteLevel` decoder. "
             f"`tests/fixtures/tokenizer/cases.json` holds {ntc} encode cases (source: {tsrc}, plus held-out "
             "paragraphs); the ids there include the leading BOS.\n")
    L.append("## Architecture\n")
    keys = ["vocab_size", "hidden_size", "num_hidden_layers", "first_k_dense_replace", "intermediate_size",
            "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "n_group",
            "topk_group", "topk_method", "scoring_func", "norm_topk_prob", "routed_scaling_factor",
            "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
            "v_head_dim", "rope_interleave", "max_position_embeddings", "rope_parameters", "tie_word_embeddings"]
    L.append("| field | value |\n|---|---|")
    for k in keys:
        L.append(f"| `{k}` | `{json.dumps(cfg.get(k))}` |")
    L.append(f"\nParameters: {n_params:,} ({n_params / 1e6:.2f} M); bf16 file size "
             f"{results['base']['file_bytes']:,} bytes. No rope scaling (plain RoPE, θ = 10000), "
             "no multi-token-prediction layer (`num_nextn_predict_layers` 0).\n")
    L.append("## Training\n")
    L.append(f"transformers {tv}, torch {torchv}, on {gpu}; experts implementation during training `{impl}`. "
             "AdamW (β = 0.9/0.95, weight decay 0.1 on matrices, grad clip 1.0), fp32 master weights with bf16 "
             "autocast, linear warm-up then cosine decay to 10 % of peak; next-token loss on random "
             f"{args.seq}-token windows of the concatenated documents (each document starts with BOS). "
             "Routing balance: DeepSeek-V3's auxiliary-loss-free update after every step, "
             f"`e_score_correction_bias += {args.bias_gamma} * sign(mean_load - load)` per MoE layer (so the shipped "
             "bias is non-zero). Weights are saved in bf16 (`e_score_correction_bias` is kept float32 by transformers).\n")
    L.append("| phase | data (rows per batch) | steps | tokens seen | peak LR | seconds | final train loss (EMA) |")
    L.append("|---|---|---|---|---|---|---|")
    for p in ("base", "prose", "code"):
        ph = phases[p]
        L.append(f"| {p} | {ph['batch_rows']} | {ph['steps']} | {ph['tokens']:,} | {ph['peak_lr']} | "
                 f"{ph['seconds']:.0f} | {ph['final_train_loss_ema']:.3f} |")
    L.append("")
    L.append("## Held-out loss\n")
    L.append("Mean next-token cross-entropy (nats/token) on `models/eval/*.txt` (non-overlapping "
             f"{args.seq}-token windows, the file encoded once with BOS), computed in float32 from the shipped "
             "bf16 weights; bits/byte in parentheses.\n")
    L.append("| model | prose | code |\n|---|---|---|")
    for m in ("base", "prose", "code"):
        r = results[m]
        L.append(f"| {m} | {r['prose']['loss']:.4f} ({r['prose']['bits_per_byte']:.3f}) | "
                 f"{r['code']['loss']:.4f} ({r['code']['bits_per_byte']:.3f}) |")
    L.append("")
    L.append("## Reference outputs\n")
    L.append("`models/prose/reference.json` follows the fixture schema of `tools/fixtures/make_fixtures.py` "
             "(logits for every prompt position, routed top-k expert ids per MoE layer, 16 greedy ids), computed "
             "by transformers in float32 on CPU from the bf16 weights upcast. Prompts: " +
             "; ".join(f"{c['_text']!r} → greedy {c['_continuation']!r}" for c in cases) + ".\n")
    L.append("## Regenerate\n")
    L.append("```sh\npython3 tools/train/prepare_corpus.py            # here: writes .corpus/ and models/eval/\n"
             "# on a GPU machine with torch, transformers 5.x, tokenizers (carry .corpus/):\n"
             "python3 tools/train/train_tiny_family.py          # writes models/, tests/fixtures/tokenizer/cases.json\n```\n")
    L.append(f"Whole run: {total_s:.0f} s. Training is seeded, but GPU kernels are not bit-deterministic, so a rerun "
             "gives slightly different weights (regenerate the reference and tokenizer cases together with the weights).\n")
    with open(os.path.join(args.models, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
