"""docker-py's `containers.run` with a network, a published port, a named
volume, a healthcheck, no devices and a restart policy, run by
tests/clients.rs against a cistern socket.

docker-py sends `network="..."` as `"NetworkingConfig": {"<network>": null}`
(dockerd ignores the entry and attaches through `HostConfig.NetworkMode`).

Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
busybox image), CISTERN_TEST_NAME (a unique prefix for names).

Prints `version <docker-py version>`, creates `<name>-net`, runs `<name>-web`
on it serving a page from the volume `<name>-data`, waits until its
healthcheck passes, fetches the page through the published port and, from a
second container on the network, by the web container's name; prints
`ready <json>` (what it holds), waits for one line on stdin so the test can
look at the daemon directly, then removes everything and prints `done`. Any
failure raises, so the exit status is non-zero.
"""

import json
import os
import socket
import sys
import time

import docker

from flows import expect, say

IMAGE = os.environ["CISTERN_TEST_IMAGE"]
NAME = os.environ["CISTERN_TEST_NAME"]
PAGE = b"hello-from-docker-py\n"
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


def wait_healthy(container, timeout=30):
    deadline = time.time() + timeout
    while True:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status")
        if status == "healthy":
            return
        if time.time() > deadline:
            raise AssertionError(f"not healthy in time: {status}")
        time.sleep(0.2)


def fetch(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        while chunk := s.recv(4096):
            page += chunk
    return page


def main():
    say("version", docker.__version__)
    client = docker.from_env(timeout=120)
    network = client.networks.create(f"{NAME}-net")

    web = client.containers.run(
        IMAGE,
        ["sh", "-c", SERVE],
        detach=True,
        name=f"{NAME}-web",
        network=network.name,
        ports={"8080/tcp": None},
        volumes={f"{NAME}-data": {"bind": "/www", "mode": "rw"}},
        healthcheck=HEALTHCHECK,
        devices=[],
        restart_policy=RESTART,
    )
    wait_healthy(web)
    say("ok healthcheck passes")
    expect("restart policy", web.attrs["HostConfig"]["RestartPolicy"], RESTART)
    expect(
        "attached to the network",
        list(web.attrs["NetworkSettings"]["Networks"]),
        [network.name],
    )

    port = int(web.ports["8080/tcp"][0]["HostPort"])
    expect("page through the published port", fetch(port).endswith(PAGE), True)

    out = client.containers.run(
        IMAGE,
        ["wget", "-q", "-O-", f"http://{NAME}-web:8080/"],
        network=network.name,
        remove=True,
    )
    expect("page by name from the network", out, PAGE)

    created = {
        "containers": [web.id],
        "networks": [network.id],
        "volumes": [f"{NAME}-data"],
    }
    say("ready", json.dumps(created))
    sys.stdin.readline()

    web.remove(force=True, v=True)
    network.remove()
    client.volumes.get(f"{NAME}-data").remove()
    say("done")


if __name__ == "__main__":
    main()
