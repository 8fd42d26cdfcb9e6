"""Deliberately broken exec subjects, for losscheck's own tests: the exact subject of
exact_mse.py, misbehaving on some requests (chosen by request id, so a repeated request
misbehaves the same way).

    python3 broken.py MODE [EVERY]

MODE (EVERY defaults to 10: the misbehaviour hits ids with id % EVERY == 3):
  crash       exit(3) after a message on stderr
  segfault    kill itself with SIGSEGV
  hang        sleep forever
  garbage     write a line that is not JSON
  wrong_id    answer with the wrong id
  wrong_shape answer a value of the wrong shape
  not_dtype   answer a number that is not a value of the dtype (17 significant digits)
  chatter     print to stdout from Python and from C (the helper must keep the stream clean);
              never misbehaves on the protocol
  no_hello    exit at once, before the handshake
"""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep adapters/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exact_mse  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "crash"
EVERY = int(sys.argv[2]) if len(sys.argv) > 2 else 10

if MODE == "no_hello":
    sys.stderr.write("broken.py: refusing to start\n")
    sys.exit(4)

inner = exact_mse.subject.handle


def handle(msg):
    if msg.get("op") == "hello":
        return inner(msg)
    rid = msg.get("id", 0)
    hit = rid % EVERY == 3
    if MODE == "chatter":
        print("chatter from print() on request", rid)
        os.write(1, b"chatter written to fd 1\n")
        return inner(msg)
    if not hit:
        return inner(msg)
    if MODE == "crash":
        sys.stderr.write("broken.py: crashing on purpose on request %d\n" % rid)
        sys.stderr.flush()
        os._exit(3)
    if MODE == "segfault":
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    if MODE == "hang":
        time.sleep(3600)
    if MODE == "garbage":
        return RAW("this is not JSON {")
    if MODE == "wrong_id":
        r = inner(msg)
        r["id"] = rid + 1000
        return r
    if MODE == "wrong_shape":
        r = inner(msg)
        r["value"] = {"shape": [2, 2], "data": [0.0, 0.0, 0.0, 0.0]}
        return r
    if MODE == "not_dtype":
        r = inner(msg)
        r["value"]["data"] = [0.30000000000000004 for _ in r["value"]["data"]]
        return r
    return inner(msg)


class RAW(str):
    pass


exact_mse.subject.handle = handle

# garbage needs to bypass json.dumps: patch the writer of the loop
_orig_serve = exact_mse.subject.serve


def serve():
    import json
    from losscheck_adapter import private_streams
    out, inp = private_streams()
    for line in inp:
        line = line.strip()
        if not line:
            continue
        reply = handle(json.loads(line))
        out.write(reply if isinstance(reply, RAW) else json.dumps(reply, allow_nan=False))
        out.write("\n")
        out.flush()


if __name__ == "__main__":
    serve()
