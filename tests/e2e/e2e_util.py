"""Helpers shared by the end-to-end tests (serve, cluster, metrics,
multihost, bench): hand-encoding of protobuf wire bytes (for calls the tests
make without stubs: health, reflection, unknown fields), the prompt set the
tests compare against `tandem generate`, and the processes they start
(Proc, `tandem serve` as ServeProc, free_port)."""

import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request


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


# ------------------------------------------------------------ prompts and malformed requests


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


def default_kv_dtype(model_cfg):
    """(layout dtype name, bytes per element) of --kv-cache-dtype auto, the
    default: the checkpoint's dtype when BF16 or F16, else fp32."""
    return {"bfloat16": ("BF16", 2), "float16": ("F16", 2)}.get(model_cfg.get("torch_dtype"), ("F32", 4))


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


# ------------------------------------------------------------ processes


def pdeathsig():
    """A preexec_fn that has the child get SIGTERM when this test dies (None where libc cannot)."""
    try:  # children die with this test even if it is SIGKILLed
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return lambda: libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return None


class Proc:
    """One process a test started: stdout lines kept and queued, stderr to a
    log file; stopped by its PID."""

    def __init__(self, name, cmd, log_path, env=None):
        self.name = name
        self.log_path = log_path
        self.log = open(self.log_path, "w")
        self.lines = queue.Queue()
        self.stdout = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
                                     preexec_fn=pdeathsig())
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, deadline):
        """The next stdout line, or None on exit or at `deadline` (monotonic)."""
        try:
            return self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def wait_line(self, pattern, timeout=60):
        """The match of the first stdout line matching `pattern` (None on exit or timeout)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.next_line(deadline)
            if line is None:
                return None
            m = rx.search(line)
            if m:
                return m
        return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self, wait=15, sig=signal.SIGTERM):
        """`sig`, then SIGKILL after `wait` s; returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def log_tail(self, n=3000):
        try:
            with open(self.log_path) as f:
                return f.read()[-n:]
        except OSError:
            return ""


class ServeProc(Proc):
    """`tandem serve --port 0` on 127.0.0.1 (plus `extra` flags), stopped by PID."""

    def __init__(self, tandem, extra, log_path):
        super().__init__("serve", [tandem, "serve", "--host", "127.0.0.1", "--port", "0"] + list(extra), log_path)
        self.port = None

    def wait_listening(self, timeout=60):
        """True once it prints its port (then in .port), False on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.next_line(deadline)
            if line is None:
                return False
            if line.startswith("tandem serve: listening on 127.0.0.1:"):
                self.port = int(line.split("127.0.0.1:")[1].split()[0])
                return True
        return False

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


def metric(metrics_port, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(('%s="%s"' % (k, v)) in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
