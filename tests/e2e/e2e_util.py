"""Helpers shared by the end-to-end tests (serve_test.py, cluster_test.py):
hand-encoding of protobuf wire bytes (for calls the tests make without
stubs: health, reflection, unknown fields) and the prompt set both compare
against `tandem generate`."""

def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def decode(buf):
    """Decodes one message level: [(field_number, value)], value int or bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _read_varint(buf, pos)
        elif wt == 2:
            n, pos = _read_varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((num, v))
    return out


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


# ------------------------------------------------------------ the server


PASSAGES = [
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: "
    "You are all resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, "
    "you know Caius Marcius is chief enemy to the people. All: We know't, we know't. First Citizen: "
    "Let us kill him, and we'll have corn at our own price. Is't a verdict?",
    "ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun. "
    "Arise, fair sun, and kill the envious moon, Who is already sick and pale with grief, That thou her "
    "maid art far more fair than she: Be not her maid, since she is envious;",
    "KING RICHARD III: Now is the winter of our discontent Made glorious summer by this sun of York; And "
    "all the clouds that lour'd upon our house In the deep bosom of the ocean buried. Now are our brows "
    "bound with victorious wreaths;",
    "MENENIUS: I tell you, friends, most charitable care Have the patricians of you. For your wants, Your "
    "suffering in this dearth, you may as well Strike at the heaven with your staves as lift them Against "
    "the Roman state,",
]
LENGTHS = [1, 2, 3, 5, 8, 12, 17, 24, 30, 40, 55]


def make_prompts(n=32):
    prompts = []
    for i in range(n):
        words = PASSAGES[i % len(PASSAGES)].split()
        k = LENGTHS[(i * 7) % len(LENGTHS)]
        prompts.append(" ".join(words[:min(k, len(words))]) if i % 5 else words[0] + " " + words[1])
    # Unique, non-empty, one per line.
    seen, out = set(), []
    for i, p in enumerate(prompts):
        if p in seen:
            p = PASSAGES[(i + 1) % len(PASSAGES)].split()[0] + " " + p
        seen.add(p)
        out.append(p)
    return out


def malformed_requests(invalid):
    """The malformed-request table both the colocated server and the router
    must refuse: (name, request fields, expected code, text the message must
    contain). `invalid` is grpc.StatusCode.INVALID_ARGUMENT (passed in so this
    module imports without grpc)."""
    INVALID = invalid
    long_ids = [5 + i % 100 for i in range(250)]
    table = [
        ("empty prompt", dict(prompt=""), INVALID, "prompt"),
        ("no prompt at all", dict(), INVALID, "prompt"),
        ("out-of-vocab prompt id", dict(prompt_token_ids=[5, 99999, 7]), INVALID, "prompt_token_ids[1]"),
        ("prompt id == vocab size", dict(prompt_token_ids=[5, 2048]), INVALID, "prompt_token_ids[1]"),
        ("temperature -1", dict(prompt="ROMEO:", temperature=-1), INVALID, "sampling.temperature"),
        ("temperature nan", dict(prompt="ROMEO:", temperature=float("nan")), INVALID, "sampling.temperature"),
        ("temperature inf", dict(prompt="ROMEO:", temperature=float("inf")), INVALID, "sampling.temperature"),
        ("top_p 0", dict(prompt="ROMEO:", top_p=0), INVALID, "sampling.top_p"),
        ("top_p 1.5", dict(prompt="ROMEO:", top_p=1.5), INVALID, "sampling.top_p"),
        ("top_k -5", dict(prompt="ROMEO:", top_k=-5), INVALID, "sampling.top_k"),
        ("min_p 2", dict(prompt="ROMEO:", min_p=2), INVALID, "sampling.min_p"),
        ("min_p -0.5", dict(prompt="ROMEO:", min_p=-0.5), INVALID, "sampling.min_p"),
        ("repetition_penalty 0", dict(prompt="ROMEO:", repetition_penalty=0), INVALID,
         "sampling.repetition_penalty"),
        ("frequency_penalty 3", dict(prompt="ROMEO:", frequency_penalty=3), INVALID, "sampling.frequency_penalty"),
        ("presence_penalty -3", dict(prompt="ROMEO:", presence_penalty=-3), INVALID, "sampling.presence_penalty"),
        ("logprobs 21", dict(prompt="ROMEO:", logprobs=21), INVALID, "sampling.logprobs"),
        ("17 stop strings", dict(prompt="ROMEO:", stop=["s%d" % i for i in range(17)]), INVALID, "sampling.stop"),
        ("an empty stop string", dict(prompt="ROMEO:", stop=["x", ""]), INVALID, "sampling.stop[1]"),
        ("out-of-vocab stop_token_ids", dict(prompt="ROMEO:", stop_token_ids=[7, 99999]), INVALID,
         "sampling.stop_token_ids[1]"),
        ("prompt + max_tokens over the context (250 + 7 > 256)", dict(prompt_token_ids=long_ids, max_tokens=7),
         INVALID, "sampling.max_tokens"),
        ("prompt text + max_tokens over the context", dict(prompt="ROMEO:", max_tokens=254), INVALID,
         "sampling.max_tokens"),
        ("request_id over 256 bytes", dict(prompt="ROMEO:", request_id="x" * 257), INVALID, "request_id"),
    ]
    return table
