//! Go: `GOPROXY` from the environment, the `go env -w` file, or the
//! toolchain's `go.env` (where Go 1.21 and later keep the default).

use super::files::{expand, is_plain_absolute, Files};
use super::{homes, push, Env, Found, Tool};

/// `$GOROOT/go.env` in common installs (Debian's golang-go, the golang
/// images' `/usr/local/go`).
const GO_ENV: [&str; 3] = [
    "/usr/lib/go/go.env",
    "/usr/lib/go-*/go.env",
    "/usr/local/go/go.env",
];

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    if let Some(value) = env.get("GOPROXY") {
        return proxies(value, "env GOPROXY", found);
    }
    let mut user = Vec::new();
    if let Some(path) = env.get("GOENV").filter(|p| is_plain_absolute(p)) {
        user.push(path.clone());
    }
    for home in homes(env) {
        user.push(format!("{home}/.config/go/env"));
    }
    let mut goroot = Vec::new();
    if let Some(root) = env.get("GOROOT").filter(|p| is_plain_absolute(p)) {
        goroot.push(format!("{}/go.env", root.trim_end_matches('/')));
    }
    goroot.extend(GO_ENV.iter().flat_map(|p| expand(files, p)));
    // The first file that sets GOPROXY wins, the user's before the toolchain's.
    for path in user.into_iter().chain(goroot) {
        let Some(text) = files.read(&path) else {
            continue;
        };
        let value = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("GOPROXY="))
            .next_back();
        if let Some(value) = value {
            return proxies(value, &path, found);
        }
    }
}

/// `GOPROXY` is a list separated by `,` or `|`; `direct` and `off` are not
/// hosts.
fn proxies(value: &str, from: &str, found: &mut Vec<Found>) {
    for url in value.split([',', '|']) {
        push(found, url, Tool::Go, from);
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    fn hosts(fs: &Mem, env: &Env) -> Vec<(String, String)> {
        let mut found = Vec::new();
        find(fs, env, &mut found);
        found.into_iter().map(|f| (f.host, f.from)).collect()
    }

    #[test]
    fn environment_then_user_file_then_toolchain_default() {
        let goenv = "/usr/local/go/go.env";
        let fs = Mem::with(&[(
            goenv,
            "# defaults\nGOPROXY=https://proxy.example.test,direct\nGOTOOLCHAIN=auto\n",
        )]);
        assert_eq!(
            hosts(&fs, &Env::new()),
            [("proxy.example.test".into(), goenv.into())]
        );
        let env = Env::from([(
            "GOPROXY".into(),
            "https://a.example.test|https://b.example.test,off".into(),
        )]);
        assert_eq!(hosts(&fs, &env).len(), 2);
        let env = Env::from([("GOPROXY".into(), "direct".into())]);
        assert_eq!(hosts(&fs, &env), []);
        let fs = Mem::with(&[
            (goenv, "GOPROXY=https://proxy.example.test,direct\n"),
            (
                "/root/.config/go/env",
                "GOPROXY=https://corp.example.test\n",
            ),
        ]);
        assert_eq!(hosts(&fs, &Env::new())[0].0, "corp.example.test");
    }
}
