#!/usr/bin/python3
"""An independent OpenDHT peer for the peer-to-peer integration tests (test-only helper).

It is *not* our daemon: it is Debian's python3-opendht (OpenDHT's own Python binding)
playing the part of another SentryPeer node, so the tests check our node against a
separate implementation of the DHT protocol and of the value format.

Run with Debian's Python (python3-opendht is a Debian package):

    /usr/bin/python3 tests/integration/opendht_peer.py --network 4242 \
        --bootstrap 127.0.0.1:14701 [--port 0]

Protocol: one JSON object per line on stdin (commands) and on stdout (replies, events).
The first line on stdout is {"ready": true, "port": P, "node_id": "..."}.

    {"cmd": "put", "data": "<text>"}          -> {"put": true|false|null}  (null: no answer
    {"cmd": "put", "data_b64": "<base64>"}                                   within "timeout")
        optional: "user_type" (default "text/plain", like SentryPeer), "timeout" (s, 10)
    {"cmd": "get", "timeout": 10}             -> {"values": [{"data_b64", "user_type", "id"}]}
    {"cmd": "listen"}                         -> {"listening": true}; then, for every value:
                                                 {"value": {"data_b64", "user_type", "id"}}
    {"cmd": "quit"}                           -> {"bye": true}; the node leaves, the process exits

The value key is InfoHash.get("bad_actors") (SentryPeer's key). OpenDHT's per-IP rate limit
is off (every peer on 127.0.0.1 is one IP) and the network id is private: never run this on
network 0.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading

import opendht

KEY = "bad_actors"
_out_lock = threading.Lock()


def emit(obj: dict) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def describe(v) -> dict:
    return {"data_b64": base64.b64encode(bytes(v.data)).decode(), "user_type": v.user_type,
            "id": str(v.id)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="UDP port (0: any)")
    ap.add_argument("--network", type=int, required=True, help="private DHT network id")
    ap.add_argument("--bootstrap", action="append", default=[], help="HOST:PORT, repeatable")
    args = ap.parse_args()
    if args.network == 0:
        print("refusing network 0 (the public SentryPeer network)", file=sys.stderr)
        return 2

    cfg = opendht.DhtConfig()
    cfg.setRateLimit(-1, -1)
    cfg.setNetwork(args.network)
    node = opendht.DhtRunner()
    node.run(port=args.port, config=cfg)
    for b in args.bootstrap:
        host, _, port = b.rpartition(":")
        node.bootstrap(host, port)
    key = opendht.InfoHash.get(KEY)
    emit({"ready": True, "port": node.getBound().getPort(),
          "node_id": node.getNodeId().decode()})

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError:
            emit({"error": f"bad command line {line!r}"})
            continue
        what = cmd.get("cmd")
        if what == "put":
            data = (base64.b64decode(cmd["data_b64"]) if "data_b64" in cmd
                    else cmd["data"].encode("utf-8"))
            value = opendht.Value(data)
            value.user_type = cmd.get("user_type", "text/plain")
            done = threading.Event()
            result = {}

            def on_done(ok, _nodes, result=result, done=done):
                result["ok"] = bool(ok)
                done.set()

            node.put(key, value, on_done)
            done.wait(float(cmd.get("timeout", 10)))
            emit({"put": result.get("ok")})
        elif what == "get":
            values = []
            finished = threading.Event()

            def on_value(v, values=values):
                values.append(describe(v))
                return True

            def on_get_done(_ok, _nodes, finished=finished):
                finished.set()

            node.get(key, on_value, on_get_done)
            finished.wait(float(cmd.get("timeout", 10)))
            emit({"values": list(values)})
        elif what == "listen":
            def on_listen(v, expired):
                if not expired:
                    emit({"value": describe(v)})
                return True

            node.listen(key, on_listen)
            emit({"listening": True})
        elif what == "quit":
            break
        else:
            emit({"error": f"unknown command {what!r}"})

    node.shutdown()
    node.join()
    emit({"bye": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
