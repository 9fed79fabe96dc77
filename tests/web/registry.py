"""Starts the agent-registry binary (memory store) on free loopback ports for
the HTTP API's Python-driven tests (schemathesis, the console in Chromium)."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """The binary as a child process; `base` is its HTTP API's origin."""

    def __init__(self, binary):
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = tempfile.NamedTemporaryFile(prefix="registry-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
        env["RUST_LOG"] = "warn"
        self.process = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(free_port()),
             "--metrics-port", str(free_port()), "--http-port", str(self.http_port),
             "--store", "memory", "--min-ttl", "1"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.get("/v1/capabilities")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"registry did not start; log: {self.log.name}")
                time.sleep(0.05)

    def request(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("x-registration-token", token)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        return self.request("GET", path)

    def register(self, **fields):
        status, body = self.request("POST", "/v1/agents", fields)
        assert status == 200, (status, body)
        return body["agentId"], body["registrationToken"]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
