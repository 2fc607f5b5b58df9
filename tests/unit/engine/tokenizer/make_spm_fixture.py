#!/usr/bin/env python3
"""Builds the SentencePiece-style tokenizer fixture for tokenizer tests.

Trains a small SentencePiece BPE model (byte_fallback, vocab 1000) on the first
90% of tinyshakespeare.txt's lines, converts it to HuggingFace Llama-style
tokenizer.json files the way transformers' LlamaConverter does, and writes the
expected ids / texts for held-out lines (the last 10%) and tricky strings:

  OUT/legacy/     normalizer Sequence[Prepend("▁"), Replace(" ", "▁")],
                  merges as "a b" strings, tokenizer_config add_bos_token true
  OUT/metaspace/  pre_tokenizer Metaspace(prepend_scheme "first", split false),
                  merges as ["a", "b"] pairs, no tokenizer_config (BOS from the
                  post_processor template)
  OUT/expected.json

Usage: make_spm_fixture.py --data tinyshakespeare.txt --out DIR
"""
import argparse
import json
import os
import sys

import sentencepiece as spm

SPACE = "\u2581"
SPECIALS = ["<unk>", "<s>", "</s>"]

TRICKY = [
    "Hello world",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "multiple   inner    spaces",
    "line one\nline two\n\nline four",
    "\n\nstarts with newlines",
    "tabs\tand\t\ttabs",
    "emoji \U0001F600 and \U0001F389\U0001F389 party",
    "family \U0001F468\u200D\U0001F469\u200D\U0001F467 flag \U0001F1EF\U0001F1F5",
    "accents: caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "CJK: \u4f60\u597d\uff0c\u4e16\u754c\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "mixed \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947",
    "numbers 1234567890 and 3.14159",
    "KING RICHARD III:\nWhat say'st thou?",
    "",
    " ",
    "   ",
    "\u2581already has a metaspace",
    "<s>",
    "<s>Hello",
    "Hello<s>world",
    "text with </s> inside and <unk> too",
    "not special: <s > < s> <S>",
]


def split_lines(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    cut = int(len(lines) * 0.9)
    return lines[:cut], lines[cut:]


def train(train_lines, prefix):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([l for l in train_lines if l.strip()]),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=1000,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=2,
        minloglevel=2,
    )


def extract(sp):
    """Vocab and merges as transformers' SentencePieceExtractor builds them."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    normal = {p for p, i in vocab.items()
              if not (sp.is_unknown(i) or sp.is_control(i) or sp.is_byte(i))}
    merges = []
    for piece in normal:
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                local.append((left, right, sp.get_score(vocab[piece])))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    # Higher score = earlier merge (stable for equal scores).
    merges.sort(key=lambda m: m[2], reverse=True)
    return vocab, [(l, r) for l, r, _ in merges]


def added_tokens():
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]


def post_processor():
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}


def decoder():
    return {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def model(vocab, merges, pairs):
    return {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab,
            "merges": [[l, r] for l, r in merges] if pairs else [f"{l} {r}" for l, r in merges]}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def reference_bpe(text, vocab, ranks):
    """HF BPE on one word: chars (byte fallback), then lowest-rank merges."""
    syms = []
    for ch in text:
        if ch in vocab:
            syms.append(ch)
        else:
            syms.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
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


def split_specials(text):
    """Leftmost-longest split on the special tokens: [(is_special, str)]."""
    out, start, i = [], 0, 0
    while i < len(text):
        hit = next((t for t in sorted(SPECIALS, key=len, reverse=True) if text.startswith(t, i)), None)
        if hit is None:
            i += 1
            continue
        if start < i:
            out.append((False, text[start:i]))
        out.append((True, hit))
        i += len(hit)
        start = i
    if start < len(text):
        out.append((False, text[start:]))
    return out


def hf_decode(ids, sp):
    """The legacy decoder chain (Replace, ByteFallback, Fuse, Strip) skipping specials."""
    out, pending = "", b""
    for i in ids:
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            pending += bytes([int(piece[3:5], 16)])
            continue
        out += pending.decode("utf-8", errors="replace") + piece.replace(SPACE, " ")
        pending = b""
    out += pending.decode("utf-8", errors="replace")
    return out[1:] if out.startswith(" ") else out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    stamp = os.path.join(args.out, "expected.json")
    if os.path.exists(stamp) and os.path.getmtime(stamp) > max(os.path.getmtime(__file__), os.path.getmtime(args.data)):
        print("spm fixture up to date")
        return 0
    train_lines, held_out = split_lines(args.data)
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, "spm")
    train(train_lines, prefix)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    vocab, merges = extract(sp)
    ranks = {m: r for r, m in enumerate(merges)}

    legacy = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(),
              "normalizer": {"type": "Sequence", "normalizers": [
                  {"type": "Prepend", "prepend": SPACE},
                  {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
              "pre_tokenizer": None, "post_processor": post_processor(), "decoder": decoder(),
              "model": model(vocab, merges, pairs=False)}
    write_json(os.path.join(args.out, "legacy", "tokenizer.json"), legacy)
    write_json(os.path.join(args.out, "legacy", "tokenizer_config.json"),
               {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                "eos_token": {"content": "</s>", "special": True}, "unk_token": "<unk>"})
    metaspace = dict(legacy, normalizer=None,
                     pre_tokenizer={"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first",
                                    "split": False},
                     model=model(vocab, merges, pairs=True))
    write_json(os.path.join(args.out, "metaspace", "tokenizer.json"), metaspace)

    held = [l for l in held_out if l.strip()][:600]
    chunks = ["\n".join(held_out[i:i + 8]) for i in range(0, 400, 8)]
    cases = []
    for text in held + chunks + TRICKY:
        # Added tokens are cut out first (HF). With the Prepend normalizer
        # every remaining stretch gets "▁" (= spm.encode of the stretch).
        # HF's Metaspace "first" prepends "▁" only to a stretch at offset 0
        # that does not already start with one (so, unlike spm, " x" gets a
        # single "▁"): computed with the reference BPE, which equals spm where
        # the two agree (asserted below).
        legacy_ids, meta_ids, offset = [], [], 0
        for special, s in split_specials(text):
            if special:
                legacy_ids.append(SPECIALS.index(s))
                meta_ids.append(SPECIALS.index(s))
            else:
                legacy_ids += sp.encode(s)
                meta = s.replace(" ", SPACE)
                if offset == 0 and not meta.startswith(SPACE):
                    meta = SPACE + meta
                meta_ids += reference_bpe(meta, vocab, ranks)
            offset += len(s)
        if text and not text.startswith((" ", SPACE)) and all(t not in text for t in SPECIALS):
            assert meta_ids == legacy_ids == sp.encode(text), text
        decoded = sp.decode(legacy_ids) if legacy_ids == sp.encode(text) else hf_decode(legacy_ids, sp)
        cases.append({"text": text, "legacy_ids": legacy_ids, "metaspace_ids": meta_ids, "decoded": decoded,
                      "metaspace_decoded": hf_decode(meta_ids, sp)})
    big = "\n".join(held_out) * 2  # ~200 KB as one SentencePiece word
    write_json(stamp, {"cases": cases, "big_text": big, "big_ids": sp.encode(big), "bos_id": 1, "eos_id": 2,
                       "vocab_size": sp.get_piece_size()})
    print(f"spm fixture: {len(cases)} cases, {len(merges)} merges -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
