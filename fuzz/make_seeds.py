#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, fuzz/corpus/<target>/seed-*,
from the bundled model's files (models/tandem-shakespeare) and hand-written
cases. Deterministic; rerun after changing it. Reproducers of fixed bugs
(fuzz/corpus/<target>/regress-*) are kept as they are.

  fuzz/make_seeds.py        (needs protoc, for the protobuf seeds)
"""
import json
import pathlib
import struct
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "tandem-shakespeare"
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, seeds):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        (d / f"seed-{name}").write_bytes(data)


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def protoc(message, text):
    """The binary encoding of `text` (protobuf text format) as tandem.v1.<message>."""
    return subprocess.run(["protoc", f"--encode=tandem.v1.{message}", "-I", str(ROOT / "proto"),
                           "tandem/v1/worker.proto", "tandem/v1/generation.proto"],
                          input=text.encode(), capture_output=True, check=True).stdout


def small_byte_level_tokenizer():
    """The bundled tokenizer.json cut to its byte alphabet, a few merges and the added tokens."""
    tok = json.loads((MODEL / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"][:40]
    keep = {t for t, i in vocab.items() if i < 256}
    for m in merges:
        a, b = m.split(" ") if isinstance(m, str) else m
        keep.update([a, b, a + b])
    tok["model"]["vocab"] = {t: i for t, i in vocab.items() if t in keep}
    tok["model"]["merges"] = merges
    return tok


def tokenizer_seeds():
    bl = small_byte_level_tokenizer()
    sp_header = (ROOT / "fuzz" / "small_tokenizers.h").read_text()
    sp = sp_header.split('R"json(')[1].split(')json"')[0]
    config = (MODEL / "tokenizer_config.json").read_text()
    minimal = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    pre = dict(minimal, pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "Punctuation"}, {"type": "WhitespaceSplit"},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"}]},
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Strip"}]},
        decoder={"type": "Metaspace", "replacement": "\u2581"})
    roberta = dict(minimal, added_tokens=[{"id": 3, "content": "<s>", "special": True},
                                          {"id": 4, "content": "</s>", "special": True}],
                   post_processor={"type": "RobertaProcessing", "cls": ["<s>", 3], "sep": ["</s>", 4]})
    return {
        "byte-level": compact(bl),
        "byte-level-config": compact(bl) + "\0" + config,
        "sentencepiece": sp,
        "minimal": compact(minimal),
        "pretokenizers": compact(pre),
        "roberta": compact(roberta) + "\0" + compact({"add_bos_token": False, "eos_token": {"content": "</s>"}}),
    }


def chat_template_seeds():
    templates = ROOT / "tests" / "unit" / "engine" / "tokenizer" / "chat_templates"
    conversation = compact({"messages": [{"role": "user", "content": "Hi \"there\" \u00e9"},
                                         {"role": "assistant", "content": [{"type": "text", "text": "x"}]}],
                            "add_generation_prompt": True, "bos_token": "<s>", "tools": [{"name": "f"}]})
    seeds = {path.stem: path.read_text() for path in sorted(templates.glob("*.jinja"))}
    seeds["llama3-vars"] = (templates / "llama3.jinja").read_text() + "\0" + conversation
    seeds["bundled"] = json.loads((MODEL / "tokenizer_config.json").read_text())["chat_template"]
    seeds["errors"] = "{{ x.y }}{% for %}{{ 1 ** 2 }}{% raw %}"
    return seeds


def encode_seeds():
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n"
    return {
        "bl-shakespeare": b"\0\0" + text.encode(),
        "bl-special": b"\0\1" + b"<|begin_of_text|>JULIET:<|end_of_text|> x<|pad|>",
        "bl-unicode": b"\0\0" + "caf\u00e9 \u2581 \U0001F600 \u00a0\t\r\n 12345".encode(),
        "bl-invalid-utf8": b"\0\0" + b"ab\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98",
        "sp-text": b"\1\1" + b"the abc th\xc3\xa9 a  b",
        "sp-bytes": b"\1\3" + b"\xe2\x96\x81z\x00\xff\xc3\xa9",
    }


def decode_seeds():
    def ids(values):
        return b"".join(struct.pack("<i", v) for v in values)
    return {
        "bl-in-vocab": b"\0\0" + ids([2045, 49, 50, 51, 300, 2046]),
        "bl-outside": b"\0\1" + ids([-1, 0, 2048, 2**31 - 1, -2**31, 65, 100]),
        "bl-prompt": b"\0\x06" + ids([2045, 40, 41, 42, 160, 161, 162, 2047]),
        "sp-bytes": b"\1\0" + ids([1, 3 + 0xE2, 3 + 0x96, 3 + 0x81, 260, 3 + 0xFF, 264, 2, 500]),
        "sp-split-char": b"\1\x04" + ids([3 + 0xC3, 3 + 0xA9, 3 + 0xF0, 3 + 0x9F, 3 + 0x98]),
    }


def safetensors(header, data=b"", pad=True):
    h = compact(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    return {
        "two-tensors": safetensors({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                                    "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
                                    "__metadata__": {"format": "pt"}}, bytes(range(22))),
        "empty-tensor": safetensors({"e": {"dtype": "F16", "shape": [0, 4], "data_offsets": [0, 0]}}),
        "scalar": safetensors({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\0\0\x80?"),
        "overlap": safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
        "truncated": safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
        "huge-shape": safetensors({"a": {"dtype": "F16", "shape": [2**62, 0, 2**62], "data_offsets": [0, 0]}}),
        "header-past-end": struct.pack("<Q", 2**64 - 1) + b"{}",
    }


def weight_index_seeds():
    index = {"metadata": {"total_size": 1234}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}}
    return {
        "two-shards": compact(index),
        "bad-shard": compact({"weight_map": {"a": "../model.safetensors", "b": 3}}),
        "not-object": "[1,2,3]",
    }


def model_config_seeds():
    config = (MODEL / "config.json").read_text()
    gen = (MODEL / "generation_config.json").read_text()
    base = json.loads(config)
    mistral = dict(base, architectures=["MistralForCausalLM"], sliding_window=4096)
    qwen = dict(base, architectures=["Qwen2ForCausalLM"], use_sliding_window=False, head_dim=None)
    llama3 = dict(base, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                  eos_token_id=[1, 2, 3], hidden_size=4096.0)
    return {
        "bundled": config + "\0" + gen,
        "bundled-no-generation": config,
        "mistral": compact(mistral) + "\0" + compact({"top_k": 50, "repetition_penalty": 1.1, "eos_token_id": 7}),
        "qwen2": compact(qwen),
        "llama3-rope": compact(llama3) + "\0" + compact({"temperature": 0, "do_sample": False}),
        "linear-rope": compact(dict(base, rope_scaling={"type": "linear", "factor": 2})),
    }


def request_seeds():
    return {
        "prompt": protoc("GenerateRequest", 'request_id: "r1" prompt: "ROMEO:" sampling { max_tokens: 16 }'),
        "ids": protoc("GenerateRequest", 'prompt_token_ids: [2045, 10, 20, 2046] sampling { temperature: 0.7 '
                      'top_p: 0.9 top_k: 40 min_p: 0.05 repetition_penalty: 1.1 frequency_penalty: 0.5 '
                      'presence_penalty: -0.5 max_tokens: 32 seed: 7 stop_token_ids: [2046] logprobs: 5 }'),
        "stops": protoc("GenerateRequest", 'prompt: "JULIET:" priority: -3 sampling { stop: ["\\n", "ROMEO"] '
                        'ignore_eos: true max_tokens: 200 }'),
        "bad-id": protoc("GenerateRequest", 'prompt_token_ids: [4000000000] sampling { top_p: 0 }'),
        "special-text": protoc("GenerateRequest", 'prompt: "<|begin_of_text|><|pad|>\\xff\\xfe" '
                               'sampling { max_tokens: 1 }'),
    }


def descriptor(kind=1, base=0x7f0000000000, length=4096, address=b"\1" * 16, rkey=b"", version=1):
    body = b"TKVD" + struct.pack("<HBBQQII", version, kind, 0, base, length, len(address), len(rkey)) + address + rkey
    h = 0xcbf29ce484222325
    for c in body:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return body + struct.pack("<Q", h)


def descriptor_seeds():
    return {
        "loopback": b"\0" + descriptor(),
        "ucx": b"\0" + descriptor(kind=2, address=bytes(range(40)), rkey=b"rkey" * 8),
        "fix-checksum": b"\1" + descriptor(length=0)[:-8] + b"\0" * 8,
        "wraps": b"\1" + descriptor(base=2**64 - 16, length=32),
        "short": b"\0TKVD\1\0",
    }


def put_guard_seeds():
    def puts(*items):
        out = b""
        for token, kind, offset, length in items:
            out += bytes([token, kind])
            out += struct.pack("<Q", offset) if kind & 1 else struct.pack("<H", offset)
            out += struct.pack("<Q", length) if kind & 2 else struct.pack("<H", length)
        return out
    small = bytes([0, 3, 5, 17, 10, 4, 1, 0, 1, 1, 1, 2, 2, 3, 1, 4])  # 2 layers, 4 blocks, 16 B spans
    return {
        "small": small + puts((1, 0, 0, 16), (1, 0, 0, 32), (2, 0, 48, 16), (1, 0, 64, 16), (3, 0, 120, 10)),
        "wide": b"\1" + struct.pack("<qqq", 2, 2**32, 2**32) + bytes([5, 1, 1, 0]) + puts((1, 3, 0, 16)),
        "negative-layers": b"\1" + struct.pack("<qqq", -1, 4, 16) + bytes([5, 2, 1, 0, 1, 1]) +
        puts((1, 1, 2**40, 8), (1, 0, 0, 8)),
    }


def kv_destination_seeds():
    def layout(heads, begin, span):
        return (f'layout {{ num_layers: 2 block_size: 4 num_kv_heads: {heads} head_dim: 2 dtype: "F16" '
                f'block_span_bytes: {span} layer_bytes: {span * 8} kv_head_begin: {begin} total_kv_heads: 2 }}')
    one = f'ranks {{ memory_descriptor: "@0" {layout(2, 0, 64)} }}'
    two = (f'ranks {{ memory_descriptor: "@1" {layout(1, 0, 32)} }} '
           f'ranks {{ memory_descriptor: "@1" {layout(1, 1, 32)} }}')
    return {
        "tp1": protoc("KvDestination", f'worker_id: "d0" block_ids: [3, 4, 5] transport: "loopback" {one} put_token: 9'),
        "tp2": protoc("KvDestination", f'block_ids: [0, 7] {two}'),
        "block-outside": protoc("KvDestination", f'block_ids: [8, 4294967295] {one}'),
        "raw-descriptor": protoc("KvDestination", 'block_ids: [1] ranks { memory_descriptor: "TKVD" '
                                 + layout(2, 0, 64)[:-1] + '} }'),
        "wrapping-layout": protoc("KvDestination", 'block_ids: [2] ranks { memory_descriptor: "@0" layout { '
                                  'num_layers: 2 num_kv_heads: 2 block_span_bytes: 64 '
                                  'layer_bytes: 18446744073709551552 total_kv_heads: 2 } }'),
    }


def decode_admit_seeds():
    def pair(admit, decode):
        a = protoc("AdmitRequest", admit)
        return struct.pack("<H", len(a)) + a + protoc("DecodeRequest", decode)
    sampling = "sampling { temperature: 1 top_p: 1 max_tokens: 8 repetition_penalty: 1 }"
    return {
        "admit": pair(f'request_id: "a" prompt_token_ids: [2045, 5, 6, 7] {sampling}', "first_token_id: 9"),
        "replayed": pair(f'request_id: "b" prompt_token_ids: [1, 2] replayed_token_ids: [3, 4, 5] {sampling}',
                         "first_token_id: 5"),
        "eos-first": pair(f'request_id: "c" prompt_token_ids: [{", ".join(["17"] * 40)}] {sampling}',
                          "first_token_id: 2046"),
        "bad-first": pair(f'request_id: "d" prompt_token_ids: [1] {sampling}', "first_token_id: 4294967295"),
        "other-id": pair(f'request_id: "e" prompt_token_ids: [1] {sampling}', 'request_id: "f" first_token_id: 1'),
        "bad-sampling": pair('request_id: "g" prompt_token_ids: [5000] sampling { top_p: 2 }', ""),
    }


def ucx_seeds():
    def msg(flags, layers, blocks, span, grants, header, payload):
        return bytes([flags, layers - 1, blocks - 1, span - 1]) + bytes(grants) + bytes([len(header)]) + header + \
            struct.pack("<H", len(payload)) + payload
    head = struct.pack("<QQQ", 16, 8, 1)
    return {
        "unguarded": msg(0, 1, 4, 16, [], head, b"x" * 8),
        "guarded": msg(1, 2, 4, 16, [1, 1, 2, 0], head, b"y" * 8),
        "across-blocks": msg(1, 2, 4, 16, [1, 1, 1, 1], struct.pack("<QQQ", 8, 32, 1), b"z" * 32),
        "short-header": msg(0, 1, 1, 8, [], b"\0" * 12, b"a"),
        "rendezvous": msg(2, 1, 2, 8, [], struct.pack("<QQQ", 0, 4, 0), b"abcd"),
    }


def api_key_seeds():
    keys = "sk-abcdefghijkl name=alice max_streams=1 tokens_per_minute=100\n# rotated weekly\n\nsk-zyxwvutsrqpo\n"
    admissions = struct.pack("<QHB", 60, 10, 1) + struct.pack("<QHB", 60, 100, 0) + struct.pack("<QHB", 500, 0, 0)
    return {
        "alice": keys + "\0Bearer sk-abcdefghijkl\0" + admissions.decode("latin-1"),
        "scheme-case": keys + "\0bEaReR   sk-zyxwvutsrqpo \0" + admissions.decode("latin-1"),
        "wrong-key": keys + "\0Bearer sk-nope\0",
        "bad-option": "sk-secretsecret colour=blue\n\0Bearer sk-secretsecret\0",
        "duplicate": "sk-1234567890 name=a\nsk-1234567890 name=b\n\0\0",
        "bad-number": "sk-abcdefghijkl max_streams=-1\n\0\0",
    }


def openai_seeds():
    """First byte: even = /v1/completions, odd = /v1/chat/completions; then the body."""
    chat = {"model": "tandem-shakespeare", "messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Who art thou?"}]}],
            "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 2, "stream": True,
            "stream_options": {"include_usage": True}}
    return {
        "completion": "\0" + compact({"model": "tandem-shakespeare", "prompt": "ROMEO:", "max_tokens": 16,
                                      "temperature": 0.7, "top_p": 0.9, "stop": ["\n"], "seed": 3, "n": 2}),
        "completion-ids": "\0" + compact({"prompt": [[1, 2, 3], [4]], "logprobs": 3, "echo": False, "top_k": 5,
                                          "min_p": 0.1, "repetition_penalty": 1.2, "ignore_eos": True}),
        "completion-bad": "\0" + compact({"prompt": "x", "top_p": 5, "logit_bias": {"1": 2}}),
        "chat": "\1" + compact(chat),
        "chat-bad": "\1" + compact({"messages": [{"role": 3}], "tools": [{"type": "function"}]}),
        "not-json": "\1{\"messages\": [",
    }


def main():
    write("tokenizer_load_fuzz", tokenizer_seeds())
    write("tokenizer_encode_fuzz", encode_seeds())
    write("chat_template_fuzz", chat_template_seeds())
    write("tokenizer_decode_fuzz", decode_seeds())
    write("safetensors_fuzz", safetensors_seeds())
    write("weight_index_fuzz", weight_index_seeds())
    write("model_config_fuzz", model_config_seeds())
    write("request_validator_fuzz", request_seeds())
    write("memory_descriptor_fuzz", descriptor_seeds())
    write("kv_put_guard_fuzz", put_guard_seeds())
    write("kv_destination_fuzz", kv_destination_seeds())
    write("decode_admit_fuzz", decode_admit_seeds())
    write("ucx_put_message_fuzz", ucx_seeds())
    write("api_keys_fuzz", api_key_seeds())
    write("openai_request_fuzz", openai_seeds())


if __name__ == "__main__":
    main()
