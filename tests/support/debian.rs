//! A Debian container (`scripts/debian-image`) that tests run shell
//! commands in, for the package and boot hook tests. Included with
//! `#[path = "support/debian.rs"] mod debian;` beside `mod support;`.

use std::path::Path;

use crate::support;

/// A Debian container that runs commands given to it, removed on drop.
pub struct Debian {
    pub name: String,
}

#[allow(dead_code)]
impl Debian {
    pub fn start() -> Debian {
        Debian::start_with(&[])
    }

    /// Started with these extra `docker run` arguments (mounts, capabilities).
    pub fn start_with(args: &[&str]) -> Debian {
        Debian::start_image(&support::debian_image(&[]), args)
    }

    /// A container of `image` (a Debian image made from
    /// `support::debian_image`).
    pub fn start_image(image: &str, args: &[&str]) -> Debian {
        let name = support::unique("cistern-debian");
        let mut cmd = support::docker_direct();
        cmd.args(["run", "-d", "--label", support::TEST_LABEL, "--name", &name])
            .args(args)
            .args([image, "sleep", "infinity"]);
        support::run_ok(&mut cmd);
        Debian { name }
    }

    pub fn copy_in(&self, file: &Path, to: &str) {
        support::run_ok(
            support::docker_direct()
                .arg("cp")
                .arg(file)
                .arg(format!("{}:{to}", self.name)),
        );
    }

    /// Runs `script` with `sh -e`; its status and its output (both streams).
    pub fn sh_status(&self, script: &str) -> (bool, String) {
        let out =
            support::run(support::docker_direct().args(["exec", &self.name, "sh", "-ec", script]));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Runs `script`, which must succeed; its standard output, trimmed.
    pub fn sh(&self, script: &str) -> String {
        let (ok, out) = self.sh_status(script);
        assert!(ok, "`{script}` failed:\n{out}");
        out.trim().to_string()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.sh_status(&format!("test -e {path} || test -L {path}"))
            .0
    }

    /// `mode owner:group` of a path.
    pub fn stat(&self, path: &str) -> String {
        self.sh(&format!("stat -c '%a %U:%G' {path}"))
    }

    /// The container's address on its network.
    pub fn address(&self) -> String {
        support::run_ok(support::docker_direct().args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name,
        ]))
        .trim()
        .to_string()
    }
}

impl Drop for Debian {
    fn drop(&mut self) {
        support::remove_containers(&[&self.name]);
    }
}
