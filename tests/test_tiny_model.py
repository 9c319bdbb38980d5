"""scripts/tiny_model.py: the tiny Llama model made on the spot, checked without torch.

What vLLM and transformers read is checked against their formats, not against the
script's own tables: the expected tensor names and shapes are derived here from
config.json as transformers' LlamaForCausalLM lays them out
(https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py);
the safetensors header is parsed here by hand (https://github.com/huggingface/safetensors#format)
and the file read again by the safetensors package's own reader; the chat template is
rendered as transformers renders it (a sandboxed jinja2 environment with trim_blocks,
lstrip_blocks and loopcontrols, given messages, add_generation_prompt and the special tokens).
"""

from __future__ import annotations

import array
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DEV = "in the dev extra: pip install -e '.[dev]'"
tokenizers = pytest.importorskip("tokenizers", reason=f"tokenizers is missing ({DEV})")
jinja2 = pytest.importorskip("jinja2", reason=f"jinja2 is missing ({DEV})")
safetensors = pytest.importorskip("safetensors", reason=f"safetensors is missing ({DEV})")

from jinja2.ext import loopcontrols  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from scripts import tiny_model  # noqa: E402

FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "special_tokens_map.json"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header and where the data starts, read by hand."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, v, i = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes |= {p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                   p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                   p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                   p + "mlp.down_proj.weight": (h, i),
                   p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)}
    return shapes


def _bf16_values(data: bytes) -> list[float]:
    """bfloat16 -> float: each value is the upper half of a little-endian float32."""
    f32 = bytearray(len(data) * 2)
    f32[2::4] = data[0::2]
    f32[3::4] = data[1::2]
    values = array.array("f", bytes(f32))
    if sys.byteorder == "big":
        values.byteswap()
    return list(values)


def test_writes_a_hugging_face_model_directory_of_about_3_mb(model: Path) -> None:
    assert {p.name for p in model.iterdir()} == FILES
    size = sum(p.stat().st_size for p in model.iterdir())
    assert 2.5e6 < size < 4e6, size
    assert [p.name for p in model.parent.iterdir()] == ["model"]  # no temporary directory left beside it


def test_config_is_a_llama_for_causal_lm_with_head_size_64(model: Path) -> None:
    cfg = _json(model / "config.json")
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings")} == {
        "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "head_dim": 64, "intermediate_size": 512, "vocab_size": 512, "max_position_embeddings": 2048}
    # vLLM versions that ignore head_dim compute it as hidden_size // num_attention_heads: the two agree.
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == cfg["head_dim"]
    assert cfg["hidden_act"] == "silu" and cfg["torch_dtype"] == "bfloat16"
    assert cfg["tie_word_embeddings"] is False and cfg["rope_theta"] == 10000.0 and cfg["rope_scaling"] is None
    assert not cfg["attention_bias"] and not cfg["mlp_bias"]


def test_safetensors_header_has_every_llama_weight_with_its_shape(model: Path) -> None:
    cfg = _json(model / "config.json")
    header, data_start = _header(model / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}  # transformers refuses a file without it
    assert data_start % 8 == 0
    expected = _expected_shapes(cfg)
    assert {name: tuple(t["shape"]) for name, t in header.items()} == expected
    assert {t["dtype"] for t in header.values()} == {"BF16"}  # torch_dtype bfloat16
    # Laid end to end from offset 0 to the end of the file, 2 bytes a value, no gap, no overlap.
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], math.prod(t["shape"])) for t in header.values())
    end = 0
    for begin, stop, count in spans:
        assert begin == end and stop - begin == 2 * count
        end = stop
    assert data_start + end == (model / "model.safetensors").stat().st_size
    assert sum(math.prod(s) for s in expected.values()) == 1_574_144  # parameters


def test_the_safetensors_reader_loads_random_matrices_and_unit_norms(model: Path) -> None:
    tensors = dict(safetensors.deserialize((model / "model.safetensors").read_bytes()))
    assert set(tensors) == set(_expected_shapes(_json(model / "config.json")))
    for name, t in tensors.items():
        values = _bf16_values(bytes(t["data"]))
        assert len(values) == math.prod(t["shape"])
        if name.endswith("norm.weight"):
            assert set(values) == {1.0}, name
        else:  # normal(0, 0.02), transformers' initializer_range
            mean = sum(values) / len(values)
            std = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
            assert abs(mean) < 0.002 and 0.019 < std < 0.021, (name, mean, std)
            assert all(math.isfinite(x) for x in values)


def test_tokenizer_vocab_matches_the_config_and_the_embedding_rows(model: Path) -> None:
    cfg = _json(model / "config.json")
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    header, _ = _header(model / "model.safetensors")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    assert vocab == cfg["vocab_size"] == header["model.embed_tokens.weight"]["shape"][0] \
        == header["lm_head.weight"]["shape"][0]
    assert max(tok.get_vocab(with_added_tokens=True).values()) == vocab - 1


def test_special_tokens_agree_across_the_files(model: Path) -> None:
    cfg, gen = _json(model / "config.json"), _json(model / "generation_config.json")
    tcfg, smap = _json(model / "tokenizer_config.json"), _json(model / "special_tokens_map.json")
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ("<s>", "</s>", "<|im_start|>", "<|im_end|>")}
    assert ids == {"<s>": 0, "</s>": 1, "<|im_start|>": 2, "<|im_end|>": 3}
    special = {t["content"] for t in json.loads((model / "tokenizer.json").read_text())["added_tokens"] if t["special"]}
    assert special == set(ids)
    assert tcfg["bos_token"] == smap["bos_token"] == "<s>" and tcfg["eos_token"] == smap["eos_token"] == "</s>"
    assert cfg["bos_token_id"] == gen["bos_token_id"] == ids["<s>"] and cfg["eos_token_id"] == ids["</s>"]
    assert gen["eos_token_id"] == [ids["</s>"], ids["<|im_end|>"]]  # a chat turn ends at <|im_end|>
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tcfg["model_max_length"] == cfg["max_position_embeddings"]


@pytest.mark.parametrize("text", ["The quick brown fox jumps over the lazy dog.",
                                  "Ein kleines Modell, sofort gemacht: Grüße, 你好 ✓"])
def test_tokenizer_encodes_with_bos_and_decodes_back(model: Path, text: str) -> None:
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    enc = tok.encode(text)
    assert enc.ids[0] == tok.token_to_id("<s>") and "<s>" not in enc.tokens[1:]
    assert all(0 <= i < tok.get_vocab_size() for i in enc.ids)
    assert tok.decode(enc.ids) == text  # byte-level: any text round-trips, special tokens skipped
    assert len(tok.encode("The quick brown fox").ids) < len("The quick brown fox")  # merges were learnt


def _render(model: Path, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    tcfg = _json(model / "tokenizer_config.json")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    return env.from_string(tcfg["chat_template"]).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=tcfg["bos_token"], eos_token=tcfg["eos_token"])


def test_chat_template_renders_as_transformers_does(model: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    turns = "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
    assert _render(model, messages, add_generation_prompt=False) == turns
    prompt = _render(model, messages, add_generation_prompt=True)
    assert prompt == turns + "<|im_start|>assistant\n"
    # vLLM tokenizes the rendered prompt without adding special tokens: each marker is one token.
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert ids.count(0) == 1 and ids[0] == 0 and ids.count(2) == 3 and ids.count(3) == 2
    assert tok.decode(ids, skip_special_tokens=False) == prompt


def test_same_seed_gives_the_same_bytes(model: Path, tmp_path: Path) -> None:
    again = tiny_model.write_tiny_model(tmp_path / "again", seed=0)
    for name in FILES:
        assert (again / name).read_bytes() == (model / name).read_bytes(), name


def test_cli_writes_a_model_whose_weights_follow_the_seed(model: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "tiny_model.py"), str(tmp_path / "m"), "--seed", "1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {tmp_path / 'm'} (3.2 MB, seed 1)")
    other = tmp_path / "m"
    for name in FILES - {"model.safetensors"}:
        assert (other / name).read_bytes() == (model / name).read_bytes(), name
    assert _header(other / "model.safetensors") == _header(model / "model.safetensors")
    assert (other / "model.safetensors").read_bytes() != (model / "model.safetensors").read_bytes()


def test_cli_refuses_a_directory_that_is_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert tiny_model.main([str(dest)]) == 1
    assert capsys.readouterr().err == f"tiny_model: error: {dest} exists and is not an empty directory\n"
    assert [p.name for p in dest.iterdir()] == ["keep.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert {p.name for p in tiny_model.write_tiny_model(tmp_path / "empty", seed=2).iterdir()} == FILES


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny_model, "write_safetensors", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tiny_model.write_tiny_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
