"""testcontainers-python with a network and aliases, an exposed port, a named
volume, a healthcheck, no devices and a restart policy, run by
tests/clients.rs against a cistern socket.

The web container joins the network through `with_network` (docker-py's
`networking_config` with aliases); the probe container through
`with_kwargs(network=...)`, which docker-py sends as
`"NetworkingConfig": {"<network>": null}`.

Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
busybox image), CISTERN_TEST_NAME (a unique prefix for names),
TESTCONTAINERS_RYUK_DISABLED=true (the Ryuk image cannot be pulled here).

Prints `version <testcontainers version>`, creates a network, starts
`<name>-web` on it (alias `web`) serving a page from the volume
`<name>-data`, waited for by its healthcheck; fetches the page through the
exposed port and, from `<name>-probe` on the network, by the alias; prints
`ready <json>` (what it holds), waits for one line on stdin so the test can
look at the daemon directly, then removes everything and prints `done`. Any
failure raises, so the exit status is non-zero.
"""

import importlib.metadata
import json
import os
import socket
import sys

import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

from flows import expect, say

IMAGE = os.environ["CISTERN_TEST_IMAGE"]
NAME = os.environ["CISTERN_TEST_NAME"]
PAGE = b"hello-from-testcontainers-python\n"
SERVE = (
    f"echo {PAGE.decode().strip()} > /www/index.html"
    " && exec httpd -f -p 8080 -h /www"
)
HEALTHCHECK = {
    "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
    "interval": 200_000_000,
    "timeout": 2_000_000_000,
    "retries": 50,
}
RESTART = {"Name": "on-failure", "MaximumRetryCount": 3}


def main():
    say("version", importlib.metadata.version("testcontainers"))
    network = Network().create()

    web = (
        DockerContainer(IMAGE)
        .with_name(f"{NAME}-web")
        .with_command(["sh", "-c", SERVE])
        .with_network(network)
        .with_network_aliases("web")
        .with_exposed_ports(8080)
        .with_volume_mapping(f"{NAME}-data", "/www", "rw")
        .with_kwargs(healthcheck=HEALTHCHECK, restart_policy=RESTART, devices=[])
        .waiting_for(HealthcheckWaitStrategy().with_startup_timeout(30))
    )
    web.start()
    say("ok healthcheck wait")
    attrs = web.get_wrapped_container()
    attrs.reload()
    expect("restart policy", attrs.attrs["HostConfig"]["RestartPolicy"], RESTART)
    expect(
        "attached to the network",
        list(attrs.attrs["NetworkSettings"]["Networks"]),
        [network.name],
    )

    host, port = web.get_container_host_ip(), int(web.get_exposed_port(8080))
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        while chunk := s.recv(4096):
            page += chunk
    expect("page through the exposed port", page.endswith(PAGE), True)

    probe = (
        DockerContainer(IMAGE)
        .with_name(f"{NAME}-probe")
        .with_command(["wget", "-q", "-O-", "http://web:8080/"])
        .with_kwargs(network=network.name)
    )
    probe.start()
    expect("probe exit code", probe.get_wrapped_container().wait()["StatusCode"], 0)
    out, _ = probe.get_logs()
    expect("page by alias from the network", out, PAGE)

    created = {
        "containers": [web.get_container_id(), probe.get_container_id()],
        "networks": [network.id],
        "volumes": [f"{NAME}-data"],
    }
    say("ready", json.dumps(created))
    sys.stdin.readline()

    probe.stop()
    web.stop()
    network.remove()
    docker.from_env().volumes.get(f"{NAME}-data").remove()
    say("done")


if __name__ == "__main__":
    main()
