#!/usr/bin/python3
"""Streams one generation from a Tandem server to stdout.

  /usr/bin/python3 clients/python/example.py --addr 127.0.0.1:50051 --prompt "ROMEO:"

Prints the prompt, then the text as it arrives, then the finish reason and
token counts on stderr. Ctrl-C cancels the request on the server.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tandem_client import TandemClient, TandemError  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0, help="deadline of the call in seconds")
    args = ap.parse_args()

    with TandemClient(args.addr, timeout=args.timeout) as client:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        stream = client.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                 seed=args.seed, stop=args.stop)
        try:
            for chunk in stream:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                if chunk.finish_reason:
                    sys.stdout.write("\n")
                    print("[finish: %s, prompt tokens: %d, completion tokens: %d]"
                          % (chunk.finish_reason, chunk.usage.prompt_tokens, chunk.usage.completion_tokens),
                          file=sys.stderr)
        except KeyboardInterrupt:
            stream.close()  # cancels the request on the server
            print("\n[cancelled]", file=sys.stderr)
            return 130
        except TandemError as e:
            print("\nerror: %s" % e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
