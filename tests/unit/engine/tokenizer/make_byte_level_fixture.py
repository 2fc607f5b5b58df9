#!/usr/bin/env python3
"""Builds the byte-level BPE fixtures for tokenizer tests.

Trains tiny byte-level BPE vocabularies (a plain pair-count trainer) on the
first 90% of tinyshakespeare.txt's lines and writes HuggingFace tokenizer.json
files in three styles, with ids from a straightforward Python reference BPE
that pre-tokenizes with the `regex` module (which has the real lookahead):

  OUT/gpt2/         ByteLevel(use_regex) pre-tokenizer, "a b" merges,
                    <|endoftext|> special
  OUT/gpt2_prefix/  the same with add_prefix_space true
  OUT/llama3/       Sequence[Split(Llama-3 regex, Isolated), ByteLevel(no
                    regex)], ["a","b"] merges, ignore_merges, template BOS
                    <|begin_of_text|>, specials plus a non-special added token
                    "<tool>" with lstrip/rstrip
  OUT/expected.json ids and decodes per style and string
  OUT/split_cases.json  regex match spans (byte offsets) for the GPT-2,
                    Llama-3, Qwen2 and o200k patterns on random strings

Usage: make_byte_level_fixture.py --data tinyshakespeare.txt --out DIR
"""
import argparse
import collections
import json
import os
import random
import sys

import regex

PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "o200k": r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}

# Building blocks of random strings for the regex and encoding tests.
PIECES = [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", "\t\t", "\u00a0", "\u3000", "\x0b", "\x0c", "\x85",
          "\u2028", "a", "Hello", "WORLD", "thee", "'s", "'S", "'ll", "'LL", "'Re", "'d", "'", "''", "1", "12",
          "12345", "\u0663\u0664", "\u00bd", ".", ",", "!!", "?", "-", "...", "(", ")", "\"", "_", "@#",
          "\u4f60\u597d", "\u3053\u3093", "\U0001F600", "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\u00e9",
          "e\u0301", "\u01c5", "\u02b0", "\u00df", "\u0130", "\u017f", "x\u200b", "\u0645\u0631",
          "\U0001F1EF\U0001F1F5"]

TRICKY = [
    "", " ", "  ", "a", " a", "  a", "a  ", "a\n", "\n", "\n\n\n", "  \n  ", "Hello world",
    "Hello  world", "Hello   world   ", "hello\tworld\t\tx", "line one\nline two\n\n  indented",
    "don't I'LL you'RE we've THEY'D it's 'tis", "1234567 89 0.5 1,000,000",
    "emoji \U0001F600\U0001F601 \U0001F468\u200D\U0001F469\u200D\U0001F467 flag \U0001F1EF\U0001F1F5",
    "caf\u00e9 na\u00efve e\u0301 \u00c5ngstr\u00f6m", "\u4f60\u597d\uff0c\u4e16\u754c\u3002 \u65e5\u672c\u8a9e",
    "nbsp\u00a0here and ideographic\u3000space", "   leading and trailing   ",
    "KING RICHARD III:\nWhat say'st thou?\n", "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ",
    "x <tool>  y", "<tool>", "  <tool>\n", "<|begin_of_text|>Hi<|end_of_text|>", "<|reserved_special_token_0|>",
    "\x00\x01 control \x7f", "\ud7ff\ue000\uffff", "\U0010FFFF",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
U2B = {c: b for b, c in B2U.items()}


def to_alphabet(s):
    return "".join(B2U[b] for b in s.encode("utf-8"))


def regex_pieces(pattern, text):
    """Isolated split: matches and the gaps between them."""
    out, prev = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() != prev:
            out.append(text[prev:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        prev = m.end()
    if prev < len(text):
        out.append(text[prev:])
    return out


def train(text, pattern, num_merges):
    words = collections.Counter(tuple(to_alphabet(w)) for w in regex.findall(pattern, text))
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, f in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = best[0] + best[1]
        new_words = collections.Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += f
        words = new_words
    vocab = {B2U[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def bpe(word, vocab, ranks, ignore_merges):
    if ignore_merges and word in vocab:
        return [vocab[word]]
    syms = list(word)
    while True:
        best = None
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    return [vocab[s] for s in syms]


class Style:
    def __init__(self, name, pattern, vocab, merges, added, prefix_space=False, ignore_merges=False):
        self.name, self.pattern, self.vocab, self.merges = name, pattern, vocab, merges
        self.added, self.prefix_space, self.ignore_merges = added, prefix_space, ignore_merges
        self.ranks = {m: r for r, m in enumerate(merges)}

    def split_added(self, text):
        """Leftmost-longest added-token split with lstrip/rstrip: [(id or None, str)]."""
        toks = sorted(self.added, key=lambda t: len(t["content"]), reverse=True)
        out, start, i = [], 0, 0
        while i < len(text):
            hit = next((t for t in toks if text.startswith(t["content"], i)), None)
            if hit is None:
                i += 1
                continue
            begin, end = i, i + len(hit["content"])
            if hit["lstrip"]:
                while begin > start and text[begin - 1].isspace():
                    begin -= 1
            if hit["rstrip"]:
                while end < len(text) and text[end].isspace():
                    end += 1
            if start < begin:
                out.append((None, text[start:begin]))
            out.append((hit["id"], text[begin:end]))
            start = i = end
        if start < len(text):
            out.append((None, text[start:]))
        return out

    def encode(self, text):
        ids = []
        for tid, seg in self.split_added(text):
            if tid is not None:
                ids.append(tid)
                continue
            if self.prefix_space and not seg.startswith(" "):
                seg = " " + seg
            for piece in regex_pieces(self.pattern, seg):
                ids += bpe(to_alphabet(piece), self.vocab, self.ranks, self.ignore_merges)
        return ids

    def decode(self, ids, skip_special):
        id_to_tok = {i: t for t, i in self.vocab.items()}
        special = {}
        for t in self.added:
            id_to_tok[t["id"]] = t["content"]
            special[t["id"]] = t["special"]
        data = b""
        for i in ids:
            if skip_special and special.get(i, False):
                continue
            tok = id_to_tok[i]
            data += bytes(U2B[c] for c in tok) if all(c in U2B for c in tok) else tok.encode("utf-8")
        return data.decode("utf-8", errors="replace")


def added(base, names):
    return [{"id": base + k, "content": n, "single_word": False, "lstrip": n == "<tool>", "rstrip": n == "<tool>",
             "normalized": False, "special": n != "<tool>"} for k, n in enumerate(names)]


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def tokenizer_json(style, pre_tokenizer, post_processor, pairs):
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": style.added, "normalizer": None, "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                                          "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": style.ignore_merges, "vocab": style.vocab,
                      "merges": [[a, b] for a, b in style.merges] if pairs else [f"{a} {b}" for a, b in style.merges]}}


def random_strings(rng, count):
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 10))) for _ in range(count)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    stamp = os.path.join(args.out, "expected.json")
    if os.path.exists(stamp) and os.path.getmtime(stamp) > max(os.path.getmtime(__file__), os.path.getmtime(args.data)):
        print("byte-level fixture up to date")
        return 0
    with open(args.data, encoding="utf-8") as f:
        lines = f.read().split("\n")
    cut = int(len(lines) * 0.9)
    train_text = "\n".join(lines[:cut])[:150000]
    held_out = lines[cut:]
    rng = random.Random(1234)

    gpt2_vocab, gpt2_merges = train(train_text, PATTERNS["gpt2"], 300)
    gpt2_added = added(len(gpt2_vocab), ["<|endoftext|>"])
    llama_vocab, llama_merges = train(train_text, PATTERNS["llama3"], 300)
    llama_added = added(len(llama_vocab), ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                                           "<tool>"])
    styles = [
        Style("gpt2", PATTERNS["gpt2"], gpt2_vocab, gpt2_merges, gpt2_added),
        Style("gpt2_prefix", PATTERNS["gpt2"], gpt2_vocab, gpt2_merges, gpt2_added, prefix_space=True),
        Style("llama3", PATTERNS["llama3"], llama_vocab, llama_merges, llama_added, ignore_merges=True),
    ]
    for s in styles[:2]:
        pre = {"type": "ByteLevel", "add_prefix_space": s.prefix_space, "trim_offsets": True, "use_regex": True}
        write_json(os.path.join(args.out, s.name, "tokenizer.json"),
                   tokenizer_json(s, pre, {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                                           "use_regex": True}, pairs=False))
        write_json(os.path.join(args.out, s.name, "tokenizer_config.json"),
                   {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False})
    llama = styles[2]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PATTERNS["llama3"]}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    post = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [llama_added[0]["id"]],
                                                              "tokens": ["<|begin_of_text|>"]}}}]}
    write_json(os.path.join(args.out, "llama3", "tokenizer.json"), tokenizer_json(llama, pre, post, pairs=True))
    write_json(os.path.join(args.out, "llama3", "tokenizer_config.json"),
               {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})

    texts = [l for l in held_out if l.strip()][:300]
    texts += ["\n".join(held_out[i:i + 6]) for i in range(0, 300, 6)]
    texts += TRICKY + random_strings(rng, 400)
    cases = []
    for text in texts:
        case = {"text": text}
        for s in styles:
            ids = s.encode(text)
            case[s.name] = {"ids": ids, "decoded": s.decode(ids, False), "decoded_skip": s.decode(ids, True)}
        cases.append(case)
    big = "\n".join(held_out)
    write_json(stamp, {"cases": cases, "big_text": big, "big_ids_llama3": llama.encode(big),
                       "llama3_bos": llama_added[0]["id"], "llama3_eos": llama_added[1]["id"],
                       "gpt2_eot": gpt2_added[0]["id"]})

    split_cases = []
    strings = TRICKY + random_strings(rng, 3000)
    for name, pattern in PATTERNS.items():
        cases = []
        for s in strings:
            spans = []
            for m in regex.finditer(pattern, s):
                b = len(s[:m.start()].encode("utf-8"))
                spans.append([b, b + len(m.group().encode("utf-8"))])
            cases.append({"text": s, "spans": spans})
        split_cases.append({"name": name, "pattern": pattern, "cases": cases})
    write_json(os.path.join(args.out, "split_cases.json"), split_cases)
    print(f"byte-level fixture: {len(cases)} cases -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
