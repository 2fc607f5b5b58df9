"""A small Python client for Tandem's public gRPC API (tandem.v1.Generation).

    from tandem_client import TandemClient

    with TandemClient("127.0.0.1:50051") as client:
        for chunk in client.generate("ROMEO:", max_tokens=32, temperature=0):
            print(chunk.text, end="", flush=True)
        text, token_ids, finish_reason, usage = client.generate_text("ROMEO:", max_tokens=8)

Needs grpcio and protobuf (Debian: python3-grpcio, python3-protobuf). The
protobuf stubs are generated on first import (see ``_stubs.py`` and README.md).

Errors are raised as ``TandemError`` subclasses, one per gRPC status code
(``InvalidArgumentError``, ``DeadlineExceededError``, ...); ``err.code`` is the
``grpc.StatusCode`` and ``err.details`` the server's message, which names the
offending field for INVALID_ARGUMENT (e.g. "sampling.top_p: 0 must be in (0, 1]").
"""

import collections
import os

import grpc

from . import _stubs

pb2, pb2_grpc = _stubs.load()

__all__ = [
    "TandemClient", "GenerationStream", "Chunk", "Usage", "Logprob", "Completion",
    "TandemError", "InvalidArgumentError", "ResourceExhaustedError", "UnavailableError",
    "DeadlineExceededError", "CancelledError", "UnimplementedError", "UnauthenticatedError", "InternalError",
    "SAMPLING_FIELDS", "pb2", "pb2_grpc",
]

# Keyword arguments of generate()/generate_text() that go into SamplingParams.
SAMPLING_FIELDS = frozenset(f.name for f in pb2.SamplingParams.DESCRIPTOR.fields)

_FINISH = {pb2.FINISH_REASON_UNSPECIFIED: None, pb2.FINISH_REASON_LENGTH: "length",
           pb2.FINISH_REASON_STOP: "stop"}


# ----------------------------------------------------------------- errors

class TandemError(Exception):
    """A failed call. ``code`` is a grpc.StatusCode, ``details`` the server's message."""

    def __init__(self, code, details):
        super().__init__("%s: %s" % (code.name, details))
        self.code = code
        self.details = details


class InvalidArgumentError(TandemError, ValueError):
    """INVALID_ARGUMENT: the request is malformed; ``details`` names the field."""


class ResourceExhaustedError(TandemError):
    """RESOURCE_EXHAUSTED: the router's queue is full; retry later."""


class UnavailableError(TandemError):
    """UNAVAILABLE: the server is unreachable or no worker can serve."""


class DeadlineExceededError(TandemError, TimeoutError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class CancelledError(TandemError):
    """CANCELLED: the call was cancelled (by the server, or by another thread)."""


class UnauthenticatedError(TandemError, PermissionError):
    """No API key, or one the server does not know (servers started with --api-key-file)."""


class UnimplementedError(TandemError):
    """UNIMPLEMENTED: the server does not serve this method."""


class InternalError(TandemError):
    """INTERNAL: the server failed."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def _error(rpc_error):
    code = rpc_error.code() if hasattr(rpc_error, "code") else grpc.StatusCode.UNKNOWN
    details = rpc_error.details() if hasattr(rpc_error, "details") else str(rpc_error)
    return _ERRORS.get(code, TandemError)(code, details or "")


# ----------------------------------------------------------------- results

Usage = collections.namedtuple("Usage", "prompt_tokens completion_tokens")
Usage.__doc__ = "Token counts of a finished request (prompt_tokens includes BOS)."

Logprob = collections.namedtuple("Logprob", "token_id logprob top_logprobs")
Logprob.__doc__ = "One generated token's logprob; top_logprobs is [(token_id, logprob)], best first."


class Chunk(collections.namedtuple("Chunk", "text token_ids finish_reason usage logprobs request_id")):
    """One streamed chunk.

    text: new complete UTF-8 text (may be "" while token_ids is not: held back).
    token_ids: the new token ids. finish_reason: None until the last chunk,
    then "length" or "stop". usage: a Usage on the last chunk, else None.
    logprobs: a Logprob per token when logprobs=N was asked for, else [].
    """

    @classmethod
    def from_proto(cls, r):
        return cls(
            text=r.text,
            token_ids=list(r.token_ids),
            finish_reason=_FINISH.get(r.finish_reason, r.finish_reason),
            usage=Usage(r.usage.prompt_tokens, r.usage.completion_tokens) if r.HasField("usage") else None,
            logprobs=[Logprob(l.token_id, l.logprob, [(t.token_id, t.logprob) for t in l.top_logprobs])
                      for l in r.logprobs],
            request_id=r.request_id,
        )


class Completion(collections.namedtuple("Completion", "text token_ids finish_reason usage")):
    """A whole generation: (text, token_ids, finish_reason, usage).

    Also carries ``logprobs`` (list of Logprob) and ``request_id`` as attributes.
    """

    logprobs = ()
    request_id = ""


# ----------------------------------------------------------------- stream

class GenerationStream:
    """An iterator of Chunk for one Generate call.

    Closing it (``close()``/``cancel()``, leaving a ``with`` block, or breaking
    out of a ``for`` loop over ``client.generate(...)`` and dropping it) cancels
    the request on the server, which frees everything the request held.
    Iteration ends after the chunk with finish_reason set; errors are raised as
    TandemError subclasses. After close(), iteration simply stops.
    """

    def __init__(self, call):
        self._call = call
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            r = next(self._call)
        except StopIteration:
            self._closed = True
            raise
        except grpc.RpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise _error(e) from None
        return Chunk.from_proto(r)

    def close(self):
        """Cancels the call if it is still running (idempotent)."""
        if not self._closed:
            self._closed = True
            self._call.cancel()

    cancel = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def trailing_metadata(self):
        return self._call.trailing_metadata()


# ----------------------------------------------------------------- client

class TandemClient:
    """A connection to a Tandem endpoint (the router, or ``tandem serve``).

    addr: "host:port". timeout: default deadline in seconds of each call
    (None: none). credentials: grpc.ChannelCredentials for TLS (default:
    plaintext). options: extra grpc channel options. api_key: sent as
    "authorization: Bearer KEY" on every generation (default: $TANDEM_API_KEY;
    needed by servers started with --api-key-file). Thread-safe: one client
    can serve many concurrent calls.
    """

    def __init__(self, addr="127.0.0.1:50051", *, timeout=None, credentials=None, options=None, api_key=None):
        self.addr = addr
        self.timeout = timeout
        key = os.environ.get("TANDEM_API_KEY") if api_key is None else api_key
        self._auth = [("authorization", "Bearer " + key)] if key else []
        opts = list(options or [])
        if credentials is None:
            self._channel = grpc.insecure_channel(addr, options=opts)
        else:
            self._channel = grpc.secure_channel(addr, credentials, options=opts)
        self._stub = pb2_grpc.GenerationStub(self._channel)
        self._health = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout=10.0):
        """Blocks until the channel connects; raises UnavailableError after `timeout` s."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                   "%s not reachable within %ss" % (self.addr, timeout)) from None

    def health(self, service="", timeout=5.0):
        """grpc.health.v1 Check: returns "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN"."""
        svc = service.encode()
        req = (b"\x0a" + _varint(len(svc)) + svc) if svc else b""
        try:
            resp = self._health(req, timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        status = 0  # HealthCheckResponse.status = 1 (enum, varint)
        if resp[:1] == b"\x08":
            status, _ = _read_varint(resp, 1)
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))

    def request(self, prompt=None, prompt_token_ids=None, *, request_id="", priority=0, **sampling):
        """Builds the GenerateRequest proto generate() would send."""
        unknown = set(sampling) - SAMPLING_FIELDS
        if unknown:
            raise TypeError("unknown sampling parameter(s): %s (known: %s)"
                            % (", ".join(sorted(unknown)), ", ".join(sorted(SAMPLING_FIELDS))))
        if prompt is not None and prompt_token_ids is not None:
            raise ValueError("give prompt or prompt_token_ids, not both")
        if isinstance(sampling.get("stop"), str):
            sampling["stop"] = [sampling["stop"]]
        sampling = {k: v for k, v in sampling.items() if v is not None}
        req = pb2.GenerateRequest(request_id=request_id, priority=priority,
                                  sampling=pb2.SamplingParams(**sampling))
        if prompt is not None:
            req.prompt = prompt
        if prompt_token_ids is not None:
            req.prompt_token_ids.extend(prompt_token_ids)
        return req

    def generate(self, prompt=None, prompt_token_ids=None, *, request_id="", priority=0,
                 timeout=None, metadata=None, **sampling):
        """Starts a generation and returns a GenerationStream of Chunk.

        Give `prompt` (text) or `prompt_token_ids`. Sampling keywords are the
        SamplingParams fields: temperature, top_p, top_k, min_p,
        repetition_penalty, frequency_penalty, presence_penalty, max_tokens,
        seed, stop (str or list), stop_token_ids, ignore_eos, logprobs; unset
        ones take the server's defaults. timeout: deadline in seconds for the
        whole stream (default: the client's). Errors surface while iterating.
        """
        req = self.request(prompt, prompt_token_ids, request_id=request_id, priority=priority, **sampling)
        call = self._stub.Generate(req, timeout=self.timeout if timeout is None else timeout,
                                   metadata=self._auth + list(metadata or []))
        return GenerationStream(call)

    def generate_text(self, prompt=None, prompt_token_ids=None, **kwargs):
        """Runs a generation to the end: returns Completion(text, token_ids, finish_reason, usage)."""
        text, ids, logprobs = [], [], []
        finish, usage, rid = None, None, ""
        with self.generate(prompt, prompt_token_ids, **kwargs) as stream:
            for c in stream:
                text.append(c.text)
                ids.extend(c.token_ids)
                logprobs.extend(c.logprobs)
                rid = c.request_id or rid
                if c.finish_reason is not None:
                    finish, usage = c.finish_reason, c.usage
        done = Completion("".join(text), ids, finish, usage)
        done.logprobs, done.request_id = logprobs, rid
        return done


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
