// testcontainers-node's own flows, run by tests/clients.rs against a cistern socket.
//
// Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
// busybox image), CISTERN_TEST_NAME (a unique prefix for names),
// TESTCONTAINERS_RYUK_DISABLED=true (the Ryuk image cannot be pulled here).
// The pull policy never pulls: the busybox image is local.
//
// Prints `version <testcontainers version>`, starts a generic container waited
// for by a log line and another waited for by its listening port, execs,
// copies content in and a file out, prints `ready <json>` (the containers it
// holds), waits for one line on stdin so the test can look at the daemon
// directly, then stops (removes) them and prints `done`. Any failure exits
// non-zero.
"use strict";

const net = require("node:net");
const readline = require("node:readline");
const tar = require("tar-stream");
const { GenericContainer, Wait } = require("testcontainers");

const IMAGE = process.env.CISTERN_TEST_IMAGE;
const NAME = process.env.CISTERN_TEST_NAME;
const NEVER_PULL = { shouldPull: () => false };
const SERVE =
  "mkdir -p /www && echo hello-from-testcontainers > /www/index.html" +
  " && echo serving-now && exec httpd -f -p 8080 -h /www";

function say(...words) {
  console.log(words.join(" "));
}

function expect(what, got, want) {
  if (got !== want) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
  say("ok", what);
}

function fetchPage(host, port) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const s = net.connect({ host, port }, () => s.end("GET / HTTP/1.0\r\n\r\n"));
    s.on("data", (c) => chunks.push(c));
    s.on("end", () => resolve(Buffer.concat(chunks).toString()));
    s.on("error", reject);
  });
}

/** The content of the one file in a tar stream (what `copyArchiveFromContainer` returns). */
function fileFromTar(stream) {
  return new Promise((resolve, reject) => {
    const extract = tar.extract();
    const files = [];
    extract.on("entry", (header, body, next) => {
      const chunks = [];
      body.on("data", (c) => chunks.push(c));
      body.on("end", () => {
        if (header.type === "file") files.push(Buffer.concat(chunks).toString());
        next();
      });
    });
    extract.on("finish", () => resolve(files.join("")));
    extract.on("error", reject);
    stream.pipe(extract);
  });
}

async function main() {
  say("version", require("testcontainers/package.json").version);

  const logs = await new GenericContainer(IMAGE)
    .withName(`${NAME}-logs`)
    .withPullPolicy(NEVER_PULL)
    .withCommand(["sh", "-c", "echo starting; sleep 0.2; echo ready-for-tests; exec sleep 300"])
    .withWaitStrategy(Wait.forLogMessage("ready-for-tests"))
    .withStartupTimeout(30000)
    .start();
  say("ok log line wait");

  const web = await new GenericContainer(IMAGE)
    .withName(`${NAME}-web`)
    .withPullPolicy(NEVER_PULL)
    .withCommand(["sh", "-c", SERVE])
    .withExposedPorts(8080)
    .withWaitStrategy(Wait.forListeningPorts())
    .withStartupTimeout(30000)
    .start();
  const page = await fetchPage(web.getHost(), web.getMappedPort(8080));
  expect("port wait, page served", page.endsWith("hello-from-testcontainers\n"), true);

  const result = await web.exec(["cat", "/www/index.html"]);
  expect("exec exit code", result.exitCode, 0);
  expect("exec output", result.output, "hello-from-testcontainers\n");

  await web.copyContentToContainer([{ content: "copied in by testcontainers\n", target: "/tmp/in.txt" }]);
  expect("copy in, read by exec", (await web.exec(["cat", "/tmp/in.txt"])).output, "copied in by testcontainers\n");
  const out = await fileFromTar(await web.copyArchiveFromContainer("/www/index.html"));
  expect("copy out", out, "hello-from-testcontainers\n");

  say("ready", JSON.stringify({ containers: [logs.getId(), web.getId()] }));
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => {
    rl.once("line", resolve);
    rl.once("close", resolve);
  });
  rl.close();

  await web.stop();
  await logs.stop();
  say("done");
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
