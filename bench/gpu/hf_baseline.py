# HF transformers eager baseline for bench/gpu (runs on the device machine): builds a
# DeepSeek-V2-Lite-shaped DeepseekV2ForCausalLM with fewer layers and random bf16 weights on the
# GPU, saves it as safetensors (the GPU engine loads the same files), then times eager prefill and
# greedy decode (DynamicCache, argmax) per batch size. Writes hf_results.json with the prompts,
# timings, greedy tokens and last-position logits, so the engine's run can compare.
import argparse
import json
import os
import time

import torch
import transformers
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--decode-batches", default="1,8,32,64")
    parser.add_argument("--decode-prompt", type=int, default=64)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--prefill", default="1x2048,8x512")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "deepseek-v2-lite-config.json")) as f:
        fields = json.load(f)
    fields["num_hidden_layers"] = args.layers
    fields.pop("architectures", None)
    fields.pop("model_type", None)
    fields.pop("torch_dtype", None)
    if isinstance(fields.get("rope_scaling"), dict):
        fields["rope_scaling"] = dict(fields["rope_scaling"], rope_type=fields["rope_scaling"].get("type", "yarn"))
    config = DeepseekV2Config(**fields)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = DeepseekV2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    started = time.perf_counter()
    model.save_pretrained(args.out, safe_serialization=True)
    save_s = time.perf_counter() - started
    info = {"transformers": transformers.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0), "layers": args.layers,
            "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
            "experts_implementation": str(getattr(model.config, "_experts_implementation", "n/a")),
            "parameters": sum(p.numel() for p in model.parameters()), "save_seconds": save_s}
    print("HF model:", info, flush=True)
    vocab = config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(1234)

    def forward(ids, past=None):
        try:
            return model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        except TypeError:
            return model(input_ids=ids, past_key_values=past, use_cache=True)

    def timed(fn):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        return result, time.perf_counter() - t0

    results = {"info": info, "decode": [], "prefill": [], "grouped_mm": {}}

    def set_experts(impl):
        setter = getattr(model, "set_experts_implementation", None)
        try:
            if setter is not None:
                setter(impl)
            model.config._experts_implementation = impl
            return True
        except Exception as error:  # noqa: BLE001 - report and go on with eager
            print(f"experts implementation {impl} unavailable: {error}", flush=True)
            return False

    set_experts("eager")
    with torch.no_grad():
        warm = torch.randint(0, vocab, (2, 16), generator=generator).cuda()
        out = forward(warm)
        forward(out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values)
        for batch in [int(b) for b in args.decode_batches.split(",")]:
            prompts = torch.randint(0, vocab, (batch, args.decode_prompt), generator=generator).cuda()
            out, prefill_s = timed(lambda: forward(prompts))
            last_logits = out.logits[:, -1].float()
            nxt = last_logits.argmax(-1, keepdim=True)
            first = nxt.clone()
            past = out.past_key_values
            tokens = []

            def decode():
                nonlocal nxt, past
                for _ in range(args.decode_steps):
                    o = forward(nxt, past)
                    past = o.past_key_values
                    nxt = o.logits[:, -1].argmax(-1, keepdim=True)
                    tokens.append(nxt[:, 0].tolist())
            _, decode_s = timed(decode)
            entry = {"batch": batch, "prompt_len": args.decode_prompt, "steps": args.decode_steps,
                     "prompts": prompts.tolist(), "first_tokens": first[:, 0].tolist(),
                     "greedy": [[step[b] for step in tokens] for b in range(batch)],
                     "last_logits_row0": last_logits[0].tolist(), "prefill_seconds": prefill_s,
                     "decode_seconds": decode_s, "decode_tokens_per_s": batch * args.decode_steps / decode_s}
            print(f"HF eager decode batch {batch}: {entry['decode_tokens_per_s']:.1f} tok/s "
                  f"({decode_s / args.decode_steps * 1e3:.2f} ms/step)", flush=True)
            results["decode"].append(entry)
            del past, out
        for spec in args.prefill.split(","):
            batch, length = (int(x) for x in spec.split("x"))
            prompts = torch.randint(0, vocab, (batch, length), generator=generator).cuda()
            forward(prompts)  # warm at this size
            times = []
            for _ in range(3):
                _, s = timed(lambda: forward(prompts))
                times.append(s)
            s = sorted(times)[1]
            entry = {"batch": batch, "prompt_len": length, "prompts": prompts.tolist(), "seconds": s,
                     "tokens_per_s": batch * length / s}
            print(f"HF eager prefill {batch}x{length}: {entry['tokens_per_s']:.0f} tok/s ({s * 1e3:.1f} ms)", flush=True)
            results["prefill"].append(entry)
        # Second, faster HF variant for reference: experts through torch grouped_mm (attention eager).
        if set_experts("grouped_mm"):
            try:
                for entry in results["decode"]:
                    if entry["batch"] not in (1, 32):
                        continue
                    prompts = torch.tensor(entry["prompts"]).cuda()
                    out = forward(prompts)
                    nxt, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values

                    def decode_grouped():
                        nonlocal nxt, past
                        for _ in range(args.decode_steps):
                            o = forward(nxt, past)
                            past, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
                    decode_grouped()  # warm
                    out = forward(prompts)
                    nxt, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
                    _, s = timed(decode_grouped)
                    results["grouped_mm"][f"decode_b{entry['batch']}"] = entry["batch"] * args.decode_steps / s
                    print(f"HF grouped_mm decode batch {entry['batch']}: "
                          f"{entry['batch'] * args.decode_steps / s:.1f} tok/s", flush=True)
                for entry in results["prefill"]:
                    prompts = torch.tensor(entry["prompts"]).cuda()
                    forward(prompts)
                    _, s = timed(lambda: forward(prompts))
                    results["grouped_mm"][f"prefill_{entry['batch']}x{entry['prompt_len']}"] = entry["batch"] * entry["prompt_len"] / s
                    print(f"HF grouped_mm prefill {entry['batch']}x{entry['prompt_len']}: "
                          f"{entry['batch'] * entry['prompt_len'] / s:.0f} tok/s", flush=True)
            except Exception as error:  # noqa: BLE001
                print(f"grouped_mm baseline failed: {type(error).__name__}: {error}", flush=True)
    with open(os.path.join(args.out, "hf_results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
