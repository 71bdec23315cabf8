"""Reference client for the support-agent socket, protocol version 1.

The device's web UI talks to the agent through this (standard library only,
Python 3.7+). The contract is SOCKET.md; this file is tested against the real
daemon by the agent's test suite (agent/tests/socket_client.rs).

    from support_agent_client import Agent, AgentError
    agent = Agent()                          # /run/support-tunnel/agent.sock
    req = agent.request(duration_secs=7200, note="no sound")
    show_to_owner(req["code"])               # never store or log the code
    for status in agent.watch(req["id"]):    # one dict per change
        update_page(status["phase"], status.get("approver"))
    agent.log(req["id"])                     # the owner's record
    agent.stop(req["id"])                    # the kill switch

Run as a script it prints each answer as JSON (for trying it out):
    python3 support_agent_client.py [--socket PATH] status
    python3 support_agent_client.py request --duration-secs 3600 --note "no sound"
    python3 support_agent_client.py watch ID | log [ID] | list | stop ID
"""

import json
import socket

DEFAULT_SOCKET = "/run/support-tunnel/agent.sock"
VERSION = 1
MAX_ANSWER = 1 << 20


class AgentError(Exception):
    """The daemon refused: `code` is SOCKET.md's error_code, str(e) its text."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


class Agent:
    """One daemon, at `path`. Each call is its own connection."""

    def __init__(self, path=DEFAULT_SOCKET, timeout=60.0):
        self.path = path
        self.timeout = timeout

    def _lines(self, request, timeout, raw=False):
        """Sends one request; yields each answer (raising AgentError on a
        refusal). With raw, yields every line as parsed JSON (recordings:
        asciicast lines) and raises only on a refusal."""
        request = dict(request, v=VERSION)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while True:
                while b"\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        if buf:
                            raise AgentError("failed", "the answer was cut off")
                        return
                    buf += chunk
                    if len(buf) > MAX_ANSWER:
                        raise AgentError("failed", "the answer is too long")
                line, buf = buf.split(b"\n", 1)
                answer = json.loads(line)
                if raw and not (isinstance(answer, dict) and answer.get("ok") is False):
                    yield answer
                    continue
                if not answer.get("ok"):
                    raise AgentError(answer.get("error_code", "failed"), answer.get("error", ""))
                yield answer
        finally:
            sock.close()

    def _call(self, request):
        for answer in self._lines(request, self.timeout):
            return answer
        raise AgentError("failed", "the daemon closed the connection without an answer")

    def request(self, duration_secs=None, ports=None, note=None):
        """Asks for support: {"id", "code", "stale_after_secs", "stale_at"}."""
        req = {"op": "request"}
        if duration_secs is not None:
            req["duration_secs"] = duration_secs
        if ports is not None:
            req["ports"] = list(ports)
        if note is not None:
            req["note"] = note
        a = self._call(req)
        return {k: a[k] for k in ("id", "code", "stale_after_secs", "stale_at")}

    def status(self):
        """Every tunnel's status object."""
        return self._call({"op": "status"})["tunnels"]

    def watch(self, tunnel_id=None):
        """Yields the tunnel's status now and at each change, until it has ended."""
        req = {"op": "watch"}
        if tunnel_id is not None:
            req["id"] = tunnel_id
        # No timeout: a tunnel may wait hours for approval. The daemon
        # closes the stream once the tunnel has ended.
        for answer in self._lines(req, None):
            yield answer["tunnel"]

    def log(self, tunnel_id=None):
        """The owner's record of a tunnel (the newest by default): a list of events."""
        req = {"op": "log"}
        if tunnel_id is not None:
            req["id"] = tunnel_id
        return self._call(req)["log"]

    def list(self):
        """Every tunnel on record: [{"id", "requested_at", "last"}], newest last."""
        return self._call({"op": "list"})["list"]

    def recordings(self, tunnel_id=None):
        """A tunnel's recorded sessions (the newest tunnel by default):
        [{"session", "bytes", "live"}], oldest first."""
        req = {"op": "recordings"}
        if tunnel_id is not None:
            req["id"] = tunnel_id
        return self._call(req)["recordings"]

    def replay(self, tunnel_id, session):
        """Yields one recording as asciicast v2: its header (a dict), then
        each event [seconds, code, data]."""
        req = {"op": "replay", "id": tunnel_id, "session": session}
        yield from self._lines(req, self.timeout, raw=True)

    def watch_session(self, tunnel_id=None):
        """Yields support's live sessions as they are recorded: each
        session's asciicast header, then its events, until the tunnel ends.
        Show "o" data in a terminal emulator (xterm.js), not a raw one."""
        req = {"op": "watch_session"}
        if tunnel_id is not None:
            req["id"] = tunnel_id
        yield from self._lines(req, None, raw=True)

    def stop(self, tunnel_id):
        """Ends the tunnel; returns once its access is gone. The ids stopped."""
        if not tunnel_id:
            raise ValueError("name the tunnel; stop_all() stops every tunnel")
        return self._call({"op": "stop", "id": tunnel_id})["done"]

    def stop_all(self):
        """Ends every live tunnel."""
        return self._call({"op": "stop"})["done"]


def main(argv=None):
    import argparse
    import sys

    p = argparse.ArgumentParser(description="Talk to the support-agent daemon (SOCKET.md).")
    p.add_argument("--socket", default=DEFAULT_SOCKET)
    sub = p.add_subparsers(dest="op", required=True)
    r = sub.add_parser("request")
    r.add_argument("--duration-secs", type=int)
    r.add_argument("--ports", type=lambda s: [int(x) for x in s.split(",")])
    r.add_argument("--note")
    sub.add_parser("status")
    sub.add_parser("list")
    for name in ("watch", "log", "recordings", "watch_session"):
        sub.add_parser(name).add_argument("id", nargs="?")
    sub.add_parser("stop").add_argument("id")
    rp = sub.add_parser("replay")
    rp.add_argument("id")
    rp.add_argument("session", type=int)
    args = p.parse_args(argv)
    agent = Agent(args.socket)
    try:
        if args.op == "request":
            out = agent.request(args.duration_secs, args.ports, args.note)
        elif args.op == "watch":
            for status in agent.watch(args.id):
                print(json.dumps(status), flush=True)
            return 0
        elif args.op in ("replay", "watch_session"):
            lines = agent.replay(args.id, args.session) if args.op == "replay" else agent.watch_session(args.id)
            for line in lines:
                print(json.dumps(line), flush=True)
            return 0
        elif args.op in ("log", "stop", "recordings"):
            out = getattr(agent, args.op)(args.id)
        else:
            out = getattr(agent, args.op)()
    except AgentError as e:
        print(json.dumps({"error_code": e.code, "error": str(e)}), file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
