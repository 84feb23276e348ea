// testcontainers-node and dockerode with a network and aliases, an exposed
// port, a named volume, a healthcheck, no devices and a restart policy, and a
// commit, run by tests/clients.rs against a cistern socket.
//
// dockerode's `docker.run()` sends `"VolumesFrom": []` at the top level of
// the create body, and its `container.commit()` (testcontainers-node's
// `commit()`) repeats the commit options in the body; dockerd ignores both.
//
// Environment: DOCKER_HOST (the cistern socket), CISTERN_TEST_IMAGE (the local
// busybox image), CISTERN_TEST_NAME (a unique prefix for names),
// TESTCONTAINERS_RYUK_DISABLED=true (the Ryuk image cannot be pulled here).
//
// Prints `version <testcontainers version>`, creates a network, starts
// `<name>-web` on it (alias `web`) serving a page from the volume
// `<name>-data`, waited for by its healthcheck; fetches the page through the
// exposed port and, with dockerode's `run` (`<name>-probe`, on the network,
// with a restart policy and no devices), by the alias; commits the web
// container as `<name>-committed:latest`; prints `ready <json>` (what it
// holds), waits for one line on stdin so the test can look at the daemon
// directly, then removes everything and prints `done`. Any failure exits
// non-zero.
"use strict";

const net = require("node:net");
const readline = require("node:readline");
const { PassThrough } = require("node:stream");
const Docker = require("dockerode");
const { GenericContainer, Network, Wait } = require("testcontainers");

const IMAGE = process.env.CISTERN_TEST_IMAGE;
const NAME = process.env.CISTERN_TEST_NAME;
const NEVER_PULL = { shouldPull: () => false };
const PAGE = "hello-from-testcontainers-node\n";
const SERVE = `echo ${PAGE.trim()} > /www/index.html && exec httpd -f -p 8080 -h /www`;
const RESTART = { Name: "on-failure", MaximumRetryCount: 3 };

function say(...words) {
  console.log(words.join(" "));
}

function expect(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) {
    throw new Error(`${what}: got ${g}, want ${w}`);
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

async function main() {
  say("version", require("testcontainers/package.json").version);
  const docker = new Docker();
  const network = await new Network().start();

  const web = await new GenericContainer(IMAGE)
    .withName(`${NAME}-web`)
    .withPullPolicy(NEVER_PULL)
    .withCommand(["sh", "-c", SERVE])
    .withNetwork(network)
    .withNetworkAliases("web")
    .withExposedPorts(8080)
    .withBindMounts([{ source: `${NAME}-data`, target: "/www" }])
    .withHealthCheck({
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
      interval: 200,
      timeout: 2000,
      retries: 50,
    })
    .withWaitStrategy(Wait.forHealthCheck())
    .withStartupTimeout(30000)
    .start();
  say("ok healthcheck wait");
  const page = await fetchPage(web.getHost(), web.getMappedPort(8080));
  expect("page through the exposed port", page.endsWith(PAGE), true);
  const webInfo = await docker.getContainer(web.getId()).inspect();
  // With aliases, testcontainers-node creates on the default network and then connects.
  expect("web attached to the network", network.getName() in webInfo.NetworkSettings.Networks, true);

  // dockerode's own run: create (with the top-level VolumesFrom), attach, start, wait.
  const output = new PassThrough();
  const chunks = [];
  output.on("data", (c) => chunks.push(c));
  const [result, probe] = await docker.run(IMAGE, ["wget", "-q", "-O-", "http://web:8080/"], output, {
    name: `${NAME}-probe`,
    Tty: false,
    HostConfig: { NetworkMode: network.getName(), RestartPolicy: RESTART, Devices: [] },
  });
  expect("probe exit code", result.StatusCode, 0);
  // Without a TTY the stream is multiplexed: 8-byte frame headers before the data.
  const raw = Buffer.concat(chunks);
  expect("page by alias from the network", raw.subarray(8).toString(), PAGE);
  const probeInfo = await probe.inspect();
  expect("restart policy", probeInfo.HostConfig.RestartPolicy, RESTART);
  expect("probe attached to the network", Object.keys(probeInfo.NetworkSettings.Networks), [network.getName()]);

  const committed = `${NAME}-committed`;
  const imageId = await web.commit({ repo: committed, tag: "latest", deleteOnExit: false });
  const image = await docker.getImage(imageId).inspect();
  expect("committed image tagged", image.RepoTags, [`${committed}:latest`]);

  say(
    "ready",
    JSON.stringify({
      containers: [web.getId(), probe.id],
      networks: [network.getId()],
      volumes: [`${NAME}-data`],
      images: [imageId],
    }),
  );
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => {
    rl.once("line", resolve);
    rl.once("close", resolve);
  });
  rl.close();

  await probe.remove({ force: true });
  await web.stop();
  await network.stop();
  await docker.getVolume(`${NAME}-data`).remove();
  await docker.getImage(imageId).remove();
  say("done");
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
