"""A property-based pass over the HTTP API from its own OpenAPI document
(schemathesis): whatever schemathesis sends, the registry never answers 5xx
and never crashes. The registry runs on the memory store on free loopback
ports; `GET /v1/watch` is left out (an endless event stream), and checked by
the Rust tests instead.

Usage: fuzz.py BINARY [MAX_EXAMPLES]"""

import os
import subprocess
import sys

from registry import Registry


def main():
    binary = sys.argv[1]
    examples = sys.argv[2] if len(sys.argv) > 2 else "100"
    schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    with Registry(binary) as registry:
        # Something to find, so GET/DELETE/heartbeat also meet real agents.
        registry.register(agentType="WORKER", capabilities=["a"])
        command = [
            schemathesis, "run", registry.base + "/v1/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", examples,
            "--exclude-path", "/v1/watch",
            "--request-timeout", "10",
            "--workers", "2",
            "--no-color",
            "--suppress-health-check", "all",
        ]
        print("fuzz:", " ".join(command[1:]), flush=True)
        result = subprocess.run(command, env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
        alive = registry.process.poll() is None
    if not alive:
        raise SystemExit(f"fuzz: the registry died; log: {registry.log.name}")
    if result.returncode != 0:
        raise SystemExit(f"fuzz: schemathesis found failures (exit {result.returncode}); "
                         f"registry log: {registry.log.name}")
    print("fuzz: ok, no server error and the registry is alive")


if __name__ == "__main__":
    main()
