//! Records the git revision for `proxy_version()` in `PROXY_GIT_REVISION`, exactly as the
//! CLI does for `proxy --version`: the same script, so both report a build the same way.

#[path = "../proxy-cli/build.rs"]
mod git_revision;

fn main() {
    git_revision::main();
}
