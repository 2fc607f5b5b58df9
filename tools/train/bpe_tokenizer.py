#!/usr/bin/python3
"""Byte-level BPE tokenizer (GPT-2 / Llama-3 style): trainer, encoder, decoder,
and a writer for HuggingFace `tokenizers` JSON (tokenizer.json) plus
tokenizer_config.json.

Pure Python + the `regex` module (no HF packages needed).

  pre-tokenize  : Llama-3 split regex (below), "Isolated" behaviour
  byte alphabet : GPT-2 bytes_to_unicode() printable mapping
  base vocab    : the 256 byte symbols, ids 0..255 in byte order
  merges        : learned on pre-token word counts; the most frequent adjacent
                  pair is merged first, ties broken by the lexicographically
                  smallest (left, right) symbol strings (deterministic)
  encode        : standard rank-based BPE per pre-token (lowest rank first)
  specials      : appended after the BPE vocab as added_tokens (special=true)

Usage (train and write tokenizer files into a directory):
  /usr/bin/python3 tools/train/bpe_tokenizer.py --data FILE --vocab-size 2048 --out DIR
"""

import argparse
import heapq
import json
import os
import sys
import time

import regex

LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}
_SPLIT_RE = regex.compile(LLAMA3_SPLIT_PATTERN)


def pretokenize(text):
    return _SPLIT_RE.findall(text)


def to_byte_symbols(piece):
    return "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))


# --------------------------------------------------------------------------- training

def train_bpe(text, vocab_size, specials=SPECIAL_TOKENS, verbose=True):
    """Returns (vocab: token string -> id, merges: list of (left, right)).

    `vocab_size` counts the specials too: the BPE vocab has
    vocab_size - len(specials) entries (256 bytes + merges)."""
    t0 = time.time()
    n_merges = vocab_size - len(specials) - 256
    assert n_merges >= 0
    # Base vocab: byte symbols in byte order (ids 0..255).
    id_to_tok = [BYTE_ENCODER[b] for b in range(256)]
    tok_to_id = {t: i for i, t in enumerate(id_to_tok)}

    # Count pre-token words once.
    word_counts = {}
    for piece in pretokenize(text):
        word_counts[piece] = word_counts.get(piece, 0) + 1
    words = []   # list of lists of symbol ids
    counts = []
    for piece, c in sorted(word_counts.items()):
        words.append([tok_to_id[ch] for ch in to_byte_symbols(piece)])
        counts.append(c)
    if verbose:
        print(f"[bpe] {len(word_counts)} unique pre-tokens, {sum(counts)} total", file=sys.stderr)

    # Pair statistics.
    pair_counts = {}
    pair_words = {}  # pair -> set of word indices containing it
    for wi, w in enumerate(words):
        c = counts[wi]
        for a, b in zip(w, w[1:]):
            p = (a, b)
            pair_counts[p] = pair_counts.get(p, 0) + c
            pair_words.setdefault(p, set()).add(wi)

    def heap_key(p, c):
        return (-c, id_to_tok[p[0]], id_to_tok[p[1]], p)

    heap = [heap_key(p, c) for p, c in pair_counts.items() if c > 0]
    heapq.heapify(heap)

    merges = []
    while len(merges) < n_merges and heap:
        negc, _, _, p = heapq.heappop(heap)
        cur = pair_counts.get(p, 0)
        if cur <= 0:
            continue
        if -negc != cur:  # stale entry; re-push with the current count
            heapq.heappush(heap, heap_key(p, cur))
            continue
        a, b = p
        new_tok = id_to_tok[a] + id_to_tok[b]
        new_id = len(id_to_tok)
        id_to_tok.append(new_tok)
        tok_to_id[new_tok] = new_id
        merges.append((id_to_tok[a], id_to_tok[b]))

        changed = {}  # pair -> delta
        for wi in sorted(pair_words.get(p, ())):
            w = words[wi]
            c = counts[wi]
            # Remove old pair counts for this word.
            for x, y in zip(w, w[1:]):
                changed[(x, y)] = changed.get((x, y), 0) - c
            # Merge left to right.
            out = []
            i = 0
            n = len(w)
            while i < n:
                if i + 1 < n and w[i] == a and w[i + 1] == b:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for x, y in zip(out, out[1:]):
                changed[(x, y)] = changed.get((x, y), 0) + c
                pair_words.setdefault((x, y), set()).add(wi)
        for q, d in changed.items():
            if d == 0:
                continue
            nc = pair_counts.get(q, 0) + d
            pair_counts[q] = nc
            if nc > 0:
                heapq.heappush(heap, heap_key(q, nc))
        pair_counts.pop(p, None)
        pair_words.pop(p, None)

    vocab = {t: i for i, t in enumerate(id_to_tok)}
    if verbose:
        print(f"[bpe] {len(merges)} merges, bpe vocab {len(vocab)}, "
              f"{time.time() - t0:.1f}s", file=sys.stderr)
    return vocab, merges


# --------------------------------------------------------------------------- tokenizer

class ByteBPETokenizer:
    def __init__(self, vocab, merges, specials=SPECIAL_TOKENS, add_bos=True):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.id_to_tok = {i: t for t, i in self.vocab.items()}
        base = len(self.vocab)
        self.special_ids = {}
        for k, s in enumerate(specials):
            self.special_ids[s] = base + k
            self.id_to_tok[base + k] = s
        self.add_bos = add_bos
        self._cache = {}
        self._special_re = (regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")")
                            if specials else None)

    @property
    def vocab_size(self):
        return len(self.vocab) + len(self.special_ids)

    @property
    def bos_id(self):
        return self.special_ids.get(BOS)

    @property
    def eos_id(self):
        return self.special_ids.get(EOS)

    @property
    def pad_id(self):
        return self.special_ids.get(PAD)

    def _bpe(self, sym):
        cached = self._cache.get(sym)
        if cached is not None:
            return cached
        parts = list(sym)
        ranks = self.ranks
        while len(parts) > 1:
            best = None
            best_rank = None
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank = r
                    best = (parts[i], parts[i + 1])
            if best is None:
                break
            a, b = best
            out = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        self._cache[sym] = ids
        return ids

    def _encode_ordinary(self, text):
        ids = []
        for piece in pretokenize(text):
            ids.extend(self._bpe(to_byte_symbols(piece)))
        return ids

    def encode(self, text, add_special_tokens=True, allow_special=True):
        ids = []
        if add_special_tokens and self.add_bos:
            ids.append(self.bos_id)
        if allow_special and self._special_re is not None:
            for chunk in self._special_re.split(text):
                if not chunk:
                    continue
                if chunk in self.special_ids:
                    ids.append(self.special_ids[chunk])
                else:
                    ids.extend(self._encode_ordinary(chunk))
        else:
            ids.extend(self._encode_ordinary(text))
        return ids

    def decode(self, ids, skip_special_tokens=True):
        out = bytearray()
        for i in ids:
            i = int(i)
            tok = self.id_to_tok.get(i)
            if tok is None:
                continue
            if tok in self.special_ids:
                if not skip_special_tokens:
                    out.extend(tok.encode("utf-8"))
                continue
            out.extend(BYTE_DECODER[ch] for ch in tok)
        return out.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ HF files
    def to_hf_json(self):
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True}
                 for s, i in sorted(self.special_ids.items(), key=lambda kv: kv[1])]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_PATTERN},
                     "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                     "use_regex": False},
                ],
            },
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                "merges": [a + " " + b for a, b in self.merges],
            },
        }

    def save(self, out_dir, model_max_length):
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False, indent=2)
            f.write("\n")
        added_decoder = {str(i): {"content": s, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
                         for s, i in sorted(self.special_ids.items(), key=lambda kv: kv[1])}
        cfg = {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added_decoder,
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD if PAD in self.special_ids else None,
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path):
        """Loads a tokenizer.json written by save() (file or directory)."""
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        vocab = j["model"]["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in j["model"]["merges"]]
        specials = [t["content"] for t in sorted(j["added_tokens"], key=lambda t: t["id"])]
        tok = cls(vocab, merges, specials=specials)
        for t in j["added_tokens"]:
            assert tok.special_ids[t["content"]] == t["id"]
        return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-fraction", type=float, default=0.9,
                    help="train on the first fraction of the file (by characters)")
    ap.add_argument("--vocab-size", type=int, default=2048, help="total, including specials")
    ap.add_argument("--model-max-length", type=int, default=512)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    train_text = text[: int(len(text) * args.train_fraction)]
    vocab, merges = train_bpe(train_text, args.vocab_size)
    tok = ByteBPETokenizer(vocab, merges)
    tok.save(args.out, args.model_max_length)
    ids = tok.encode(train_text, add_special_tokens=False)
    assert tok.decode(ids) == train_text, "round trip failed"
    print(f"[bpe] train split: {len(train_text)} chars -> {len(ids)} tokens "
          f"({len(train_text) / len(ids):.3f} chars/token)", file=sys.stderr)


if __name__ == "__main__":
    main()
