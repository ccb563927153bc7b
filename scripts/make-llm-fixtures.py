#!/usr/bin/env python3
"""Makes the tiny random-weight Hugging Face checkpoints in tests/llm/ and their reference
outputs, computed by the transformers library. Run once, by hand, in a venv with torch and
transformers (not in CI: torch is ~5 GB); the small results are committed.

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch transformers tokenizers
    /tmp/tv/bin/python scripts/make-llm-fixtures.py

Each fixture directory holds config.json, model.safetensors (f32 or bf16), tokenizer.json,
tokenizer_config.json (with a chat template), generation_config.json and reference.json:
the prompt's token ids, the logits of every prompt position (float32, as a flat list), and the
greedy continuation computed by full recomputation, ignoring EOS. reference.json also records
the smallest gap between the best and second-best logit along the continuation, so a test
failing on a near-tie is recognisable.
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "llm")
PROMPT = "The quick brown fox jumps over the lazy dog, 12 times."
STEPS = 12
VOCAB = 384
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "kuaxin runs one model on every chip: CPU, CUDA, Vulkan, Metal, Ascend.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 2026.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Large language models generate text one token at a time.",
    "一个模型代码，所有芯片。跨芯。",
] * 20


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 3,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok


BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    initializer_range=0.08,
    tie_word_embeddings=False,
    eos_token_id=VOCAB - 3,
    bos_token_id=None,
    pad_token_id=None,
)


def fixtures():
    yield "llama", transformers.LlamaConfig(
        **{**BASE, "tie_word_embeddings": True},
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ), torch.float32
    yield "mistral", transformers.MistralConfig(
        **BASE, sliding_window=5, head_dim=16
    ), torch.bfloat16
    yield "qwen2", transformers.Qwen2Config(
        **{**BASE, "tie_word_embeddings": True}, rope_parameters=dict(rope_type="default", rope_theta=1e6)
    ), torch.float32
    yield "qwen3", transformers.Qwen3Config(
        **BASE, head_dim=32, rope_parameters=dict(rope_type="linear", rope_theta=1e6, factor=2.0)
    ), torch.bfloat16
    yield "qwen3_moe", transformers.Qwen3MoeConfig(
        **BASE,
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
    ), torch.float32
    yield "mixtral", transformers.MixtralConfig(
        **BASE, num_local_experts=4, num_experts_per_tok=2
    ), torch.bfloat16
    yield "deepseek_v3", transformers.DeepseekV3Config(
        **{**BASE, "num_hidden_layers": 3, "num_key_value_heads": 4},
        moe_intermediate_size=32,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        q_lora_rank=32,
        kv_lora_rank=24,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        rope_interleave=True,
        rope_parameters=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=4.0,
            original_max_position_embeddings=64,
            beta_fast=32,
            beta_slow=1,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
    ), torch.bfloat16


def variants():
    """Other configurations than the committed fixtures: run with --variants OUT_DIR and point
    KUAXIN_LLM_FIXTURES at OUT_DIR to check that they load and match too."""
    small = {**BASE, "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 3,
             "num_hidden_layers": 3, "intermediate_size": 80}
    yield "qwen2_untied_dynamic", transformers.Qwen2Config(
        **small, rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)
    ), torch.float32
    yield "llama_bias_mha", transformers.LlamaConfig(
        **{**small, "num_key_value_heads": 6}, attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="linear", rope_theta=5e5, factor=3.0)
    ), torch.float16
    yield "qwen3_moe_sparse_step", transformers.Qwen3MoeConfig(
        **small, head_dim=8, num_experts=6, num_experts_per_tok=3, moe_intermediate_size=16,
        norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[]
    ), torch.float32
    yield "deepseek_no_q_lora", transformers.DeepseekV3Config(
        **{**small, "num_key_value_heads": 6}, moe_intermediate_size=16, n_routed_experts=4,
        n_shared_experts=2, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=2, routed_scaling_factor=1.0, norm_topk_prob=False,
        q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
        rope_interleave=False, rope_parameters=dict(rope_type="default", rope_theta=1e4)
    ), torch.float32


def main():
    global ROOT
    args = sys.argv[1:]
    chosen = fixtures
    if args[:1] == ["--variants"]:
        ROOT, args, chosen = args[1], args[2:], variants
    only = set(args)
    tok = make_tokenizer()
    ids = tok.encode(PROMPT).ids
    for name, cfg, dtype in chosen():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        cfg._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        with torch.no_grad():
            for n, p in model.named_parameters():
                # Routers and norms get visible structure too (zero init hides routing bugs).
                if p.dim() == 1:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif "gate.weight" in n:
                    p.normal_(0.0, 0.5)
            for n, b in model.named_buffers():
                if n.endswith("e_score_correction_bias"):
                    b.copy_(0.05 * torch.randn_like(b))
            # The reference is computed from the values the checkpoint stores. Parameters
            # only: casting the whole module would also round the rotary frequency buffers.
            for p in model.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
        model.eval()
        out_dir = os.path.join(ROOT, name)
        os.makedirs(out_dir, exist_ok=True)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
            seq = list(ids)
            gaps = []
            for _ in range(STEPS):
                last = model(torch.tensor([seq])).logits[0, -1].float()
                top = torch.topk(last, 2).values
                gaps.append(float(top[0] - top[1]))
                seq.append(int(last.argmax()))
        model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
        tok.save(os.path.join(out_dir, "tokenizer.json"))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(
                {
                    "chat_template": CHATML,
                    "eos_token": "<|im_end|>",
                    "bos_token": None,
                    "tokenizer_class": "PreTrainedTokenizerFast",
                },
                f,
                indent=1,
            )
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": [VOCAB - 3, VOCAB - 1]}, f, indent=1)
        ref = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "prompt": PROMPT,
            "prompt_ids": ids,
            "logits_shape": list(logits.shape),
            "logits": [round(float(x), 7) for x in logits.flatten()],
            "greedy": seq[len(ids):],
            "min_greedy_gap": min(gaps),
        }
        with open(os.path.join(out_dir, "reference.json"), "w") as f:
            json.dump(ref, f)
        size = sum(os.path.getsize(os.path.join(out_dir, x)) for x in os.listdir(out_dir))
        print(f"{name}: {size / 1024:.0f} KiB, {len(ids)} prompt tokens, min gap {min(gaps):.4f}")


if __name__ == "__main__":
    main()
