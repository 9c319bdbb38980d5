"""Write a tiny Llama-architecture model in Hugging Face format, made on the spot (no download).

    python scripts/tiny_model.py DEST [--seed N]

DEST (new, or an empty directory) gets what ``vllm serve DEST`` and transformers'
``AutoConfig``/``AutoTokenizer``/``AutoModelForCausalLM`` read: ``config.json``
(``LlamaForCausalLM``: hidden 256, 2 layers, 4 attention and 4 key/value heads of
size 64, MLP 512, 2048 positions, bfloat16), ``model.safetensors`` (random weights,
normal with std 0.02 as transformers initialises them, norms 1), a byte-level BPE
tokenizer trained here on a few sentences (``tokenizer.json``, vocab 512 with the
special tokens ``<s>``, ``</s>``, ``<|im_start|>``, ``<|im_end|>``), its
``tokenizer_config.json`` with a ChatML-style chat template, ``special_tokens_map.json``
and ``generation_config.json``: about 3.2 MB, under a second.  The same seed gives
the same bytes (the weights come from ``random.Random(seed)``; BPE training is
deterministic, though ``tokenizers`` releases write tokenizer.json's merges
differently).  The model says nothing sensible, but every token it picks is real, so
a server answers real completions with it.

Needs Python >= 3.11 and ``tokenizers`` only (no torch, no numpy), so any vLLM
runtime's own Python can run it.  The safetensors file is written here (an 8-byte
little-endian header length, a JSON header, the raw tensors;
https://github.com/huggingface/safetensors#format) because the format is that small
and the writer then needs nothing more.  Names and shapes follow transformers'
Llama (https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py,
configuration_llama.py beside it); the config uses the keys of the published Llama
checkpoints (``rope_theta``, ``torch_dtype``), which transformers 4 and 5 and vLLM read.

Checked by tests/test_tiny_model.py (offline, without torch); made for the GPU test
in tests/test_serve_gpu.py, which serves it from a real vLLM runtime.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HIDDEN = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 4
HEAD_DIM = 64
INTERMEDIATE = 512
MAX_POSITIONS = 2048
VOCAB = 512  # the BPE trainer's target: 256 bytes + 4 special tokens + merges
INIT_STD = 0.02  # transformers' initializer_range for Llama

BOS, EOS, IM_START, IM_END = "<s>", "</s>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END)  # ids 0..3, in this order

# ChatML-style turns; rendered by transformers and vLLM with jinja2 (messages,
# add_generation_prompt, bos_token), https://huggingface.co/docs/transformers/main/en/chat_templating
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Enough distinct words that BPE reaches VOCAB merges (a few dozen sentences would not change that).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model is made on the spot, with no download at all.",
    "Builder locks, checks, builds and serves torch and vLLM runtimes for a GPU inference host.",
    "Hello! How are you today? I am fine, thank you, and you?",
    "Numbers count too: 0 1 2 3 4 5 6 7 8 9, 10, 42, 100, 2048.",
    "The server answers a chat completion request with a short reply.",
    "Random weights say nothing sensible, but every token they choose is a real one.",
    "Pack my box with five dozen liquor jugs.",
    "Sphinx of black quartz, judge my vow.",
    "The route file points QueryLake at the slot that serves it.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Tokenizers split text into pieces; the model reads the pieces as numbers.",
)


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer (as GPT-2 and Llama 3 use) trained on SENTENCES; it adds ``<s>`` in front."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A:0", pair=f"{BOS} $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def _token_id(tok: Tokenizer, token: str) -> int:
    found = tok.token_to_id(token)
    if found is None:  # cannot happen: the trainer puts every special token first
        raise RuntimeError(f"the trained tokenizer lacks {token}")
    return found


def llama_config(*, vocab_size: int, bos_token_id: int, eos_token_id: int) -> dict[str, object]:
    """config.json: transformers' LlamaConfig keys, as the published Llama checkpoints write them."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": INIT_STD,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "bfloat16",
    }


def tensor_shapes(vocab_size: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every weight of LlamaForCausalLM (untied lm_head), in state-dict order."""
    yield "model.embed_tokens.weight", (vocab_size, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        yield f"{p}.self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)
        yield f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)
        yield f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)
        yield f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)
        yield f"{p}.input_layernorm.weight", (HIDDEN,)
        yield f"{p}.post_attention_layernorm.weight", (HIDDEN,)
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (vocab_size, HIDDEN)


def bfloat16_bytes(values: list[float]) -> bytes:
    """Little-endian bfloat16: the upper half of each float32 (rounded toward zero)."""
    f32 = array.array("f", values)
    if sys.byteorder == "big":
        f32.byteswap()
    raw = f32.tobytes()
    out = bytearray(len(raw) // 2)
    out[0::2] = raw[2::4]
    out[1::2] = raw[3::4]
    return bytes(out)


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], bytes]], dtype: str) -> None:
    """One safetensors file: tensors laid end to end in the given order, the header padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}  # transformers refuses other formats
    offset = 0
    for name, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, data in tensors:
            f.write(data)


def random_weights(vocab_size: int, seed: int) -> list[tuple[str, tuple[int, ...], bytes]]:
    """Normal(0, INIT_STD) matrices and all-ones norms, as transformers initialises Llama; bfloat16."""
    rng = random.Random(seed)
    out = []
    for name, shape in tensor_shapes(vocab_size):
        n = 1
        for dim in shape:
            n *= dim
        values = [1.0] * n if len(shape) == 1 else [rng.gauss(0.0, INIT_STD) for _ in range(n)]
        out.append((name, shape, bfloat16_bytes(values)))
    return out


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fill(directory: Path, seed: int) -> None:
    tok = train_tokenizer()
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    bos, eos, im_end = (_token_id(tok, t) for t in (BOS, EOS, IM_END))
    _write_json(directory / "config.json", llama_config(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos))
    # vLLM takes its stop tokens from here too: a chat turn ends at <|im_end|>.
    _write_json(directory / "generation_config.json", {"bos_token_id": bos, "eos_token_id": [eos, im_end]})
    write_safetensors(directory / "model.safetensors", random_weights(vocab_size, seed), "BF16")
    tok.save(str(directory / "tokenizer.json"))
    _write_json(directory / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })
    _write_json(directory / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS})


def write_tiny_model(dest: Path, *, seed: int = 0) -> Path:
    """Write the model directory at DEST (absent or empty) and return it.

    The files are written into a temporary directory beside DEST and renamed into
    place, so DEST is either complete or untouched.  Raises FileExistsError when
    DEST holds anything.
    """
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _fill(tmp, seed)
        tmp.chmod(0o755)
        os.replace(tmp, dest)  # a rename; onto an empty directory too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, metavar="DEST", help="directory to create (absent or empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    try:
        dest = write_tiny_model(args.dest, seed=args.seed)
    except OSError as exc:
        print(f"tiny_model: error: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"wrote {dest} ({size / 1e6:.1f} MB, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
