"""docker-py's own flows, run by tests/clients.rs against a cistern socket.

Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
busybox image), CISTERN_TEST_NAME (a unique prefix for names and tags).

Prints `version <docker-py version>`, runs every flow, prints `ready <json>`
(what it created and still holds), waits for one line on stdin so the test can
look at the daemon directly, then removes everything and prints `done`. Any
failure raises, so the exit status is non-zero.
"""

import io
import json
import os
import socket
import sys
import tarfile
import time

import docker
from docker.utils.socket import frames_iter

from flows import expect, say

IMAGE = os.environ["CISTERN_TEST_IMAGE"]
NAME = os.environ["CISTERN_TEST_NAME"]


def send_and_close(sock, data):
    """Writes through docker-py's hijacked socket, then half-closes it."""
    raw = getattr(sock, "_sock", sock)
    raw.sendall(data)
    raw.shutdown(socket.SHUT_WR)


def read_all(sock):
    streams = {1: b"", 2: b""}
    for stream, data in frames_iter(sock, tty=False):
        streams[stream] = streams.get(stream, b"") + data
    return streams[1], streams[2]


def main():
    say("version", docker.__version__)
    client = docker.from_env(timeout=120)
    client.ping()
    created = {"containers": [], "images": []}

    # containers.run, attached, remove=True: output returned, container gone.
    out = client.containers.run(IMAGE, ["sh", "-c", "echo hello"], remove=True)
    expect("run remove=True output", out, b"hello\n")

    # Detached, then streamed logs until the container exits.
    chatty = client.containers.run(
        IMAGE,
        ["sh", "-c", "for i in 1 2 3; do echo line$i; done"],
        detach=True,
        name=f"{NAME}-chatty",
    )
    created["containers"].append(chatty.id)
    lines = b"".join(chatty.logs(stream=True, follow=True))
    expect("logs stream follow", lines, b"line1\nline2\nline3\n")
    expect("wait", chatty.wait()["StatusCode"], 0)

    # A long-running container for exec and archives.
    box = client.containers.run(
        IMAGE, ["sleep", "600"], detach=True, name=f"{NAME}-box"
    )
    created["containers"].append(box.id)

    result = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    expect("exec_run exit code", result.exit_code, 3)
    expect("exec_run output", result.output, (b"out\n", b"err\n"))

    # exec with stdin through docker-py's own socket hijacking.
    exec_id = client.api.exec_create(box.id, ["cat"], stdin=True)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)
    send_and_close(sock, b"through the exec socket\n")
    stdout, _ = read_all(sock)
    sock.close()
    expect("exec_start(socket=True) stdin", stdout, b"through the exec socket\n")
    expect("exec exit code", client.api.exec_inspect(exec_id)["ExitCode"], 0)

    # attach_socket to a container reading stdin (StdinOnce: EOF ends it).
    cat = client.api.create_container(
        IMAGE, ["cat"], stdin_open=True, name=f"{NAME}-cat"
    )["Id"]
    created["containers"].append(cat)
    sock = client.api.attach_socket(
        cat, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
    )
    client.api.start(cat)
    send_and_close(sock, b"through the attach socket\n")
    stdout, _ = read_all(sock)
    sock.close()
    expect("attach_socket stdin", stdout, b"through the attach socket\n")
    expect("attached container exit", client.api.wait(cat)["StatusCode"], 0)

    # put_archive / get_archive.
    payload = b"archived bytes\n" * 1000
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    expect("put_archive", box.put_archive("/tmp", tar.getvalue()), True)
    expect(
        "file seen inside",
        box.exec_run(["wc", "-c", "/tmp/hello.txt"]).output.split()[0],
        str(len(payload)).encode(),
    )
    bits, stat = box.get_archive("/tmp/hello.txt")
    expect("get_archive stat name", stat["name"], "hello.txt")
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
        expect("get_archive content", t.extractfile("hello.txt").read(), payload)

    # images.build from a file object (a Dockerfile, no context), no pull.
    tag = f"{NAME}-built:latest"
    dockerfile = f"FROM {IMAGE}\nRUN echo built > /built\n".encode()
    image, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=tag, pull=False, rm=True
    )
    created["images"].append(image.id)
    out = client.containers.run(tag, ["cat", "/built"], remove=True)
    expect("built image runs", out, b"built\n")

    # events, decoded, until the die event of our container.
    since = int(time.time()) - 1
    short = client.containers.run(
        IMAGE, ["sh", "-c", "exit 7"], detach=True, name=f"{NAME}-short"
    )
    created["containers"].append(short.id)
    events = client.events(
        since=since, decode=True, filters={"container": short.id, "type": "container"}
    )
    seen = []
    for event in events:
        seen.append(event.get("status") or event.get("Action"))
        if event.get("status") == "die" and event.get("id") == short.id:
            expect("die exit code", event["Actor"]["Attributes"]["exitCode"], "7")
            break
    events.close()
    expect("events before die", seen[:3], ["create", "start", "die"])

    say("ready", json.dumps(created))
    sys.stdin.readline()

    for cid in created["containers"]:
        client.api.remove_container(cid, force=True, v=True)
    client.images.remove(tag)
    expect("nothing listed", client.containers.list(all=True, filters={"name": NAME}), [])
    say("done")


if __name__ == "__main__":
    main()
