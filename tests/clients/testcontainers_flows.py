"""testcontainers-python's own flows, run by tests/clients.rs against a cistern socket.

Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
busybox image), CISTERN_TEST_NAME (a unique prefix for names),
TESTCONTAINERS_RYUK_DISABLED=true (the Ryuk image cannot be pulled here).
testcontainers-python pulls only images that are missing; the busybox image is
local, so nothing is pulled.

Prints `version <testcontainers version>`, starts a generic container waited
for by a log line and another waited for by a port, execs, copies a file in
and out, prints `ready <json>` (the containers it holds), waits for one line
on stdin so the test can look at the daemon directly, then stops (removes)
them and prints `done`. Any failure raises, so the exit status is non-zero.
"""

import importlib.metadata
import json
import os
import pathlib
import socket
import sys
import tempfile

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy, PortWaitStrategy

from flows import expect, say

IMAGE = os.environ["CISTERN_TEST_IMAGE"]
NAME = os.environ["CISTERN_TEST_NAME"]

# Serves a page on 8080 after saying so in its log.
SERVE = (
    "mkdir -p /www && echo hello-from-testcontainers > /www/index.html"
    " && echo serving-now && exec httpd -f -p 8080 -h /www"
)


def main():
    say("version", importlib.metadata.version("testcontainers"))

    logs = (
        DockerContainer(IMAGE)
        .with_name(f"{NAME}-logs")
        .with_command(["sh", "-c", "echo starting; sleep 0.2; echo ready-for-tests; exec sleep 300"])
        .waiting_for(LogMessageWaitStrategy("ready-for-tests").with_startup_timeout(30))
    )
    logs.start()
    out, _ = logs.get_logs()
    expect("log line wait", b"ready-for-tests" in out, True)

    web = (
        DockerContainer(IMAGE)
        .with_name(f"{NAME}-web")
        .with_command(["sh", "-c", SERVE])
        .with_exposed_ports(8080)
        .waiting_for(PortWaitStrategy(8080).with_startup_timeout(30))
    )
    web.start()
    host, port = web.get_container_host_ip(), int(web.get_exposed_port(8080))
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        while chunk := s.recv(4096):
            page += chunk
    expect("port wait, page served", page.endswith(b"hello-from-testcontainers\n"), True)

    result = web.exec(["cat", "/www/index.html"])
    expect("exec exit code", result.exit_code, 0)
    expect("exec output", result.output, b"hello-from-testcontainers\n")

    web.copy_into_container(b"copied in by testcontainers\n", "/tmp/in.txt")
    expect("copy in, read by exec", web.exec(["cat", "/tmp/in.txt"]).output, b"copied in by testcontainers\n")
    with tempfile.TemporaryDirectory() as d:
        dest = pathlib.Path(d) / "out.txt"
        web.copy_from_container("/www/index.html", dest)
        expect("copy out", dest.read_bytes(), b"hello-from-testcontainers\n")

    created = {"containers": [logs.get_container_id(), web.get_container_id()]}
    say("ready", json.dumps(created))
    sys.stdin.readline()

    web.stop()
    logs.stop()
    say("done")


if __name__ == "__main__":
    main()
