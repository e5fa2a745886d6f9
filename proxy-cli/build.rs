//! Records the git revision for `proxy --version` (`unknown` outside a git checkout, as in
//! a source tarball) in `PROXY_GIT_REVISION`. proxy-ffi's build script runs it too, for
//! `proxy_version()`.

use std::process::Command;

pub(crate) fn main() {
    let revision =
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { "-modified" } else { "" };
    println!("cargo:rustc-env=PROXY_GIT_REVISION={revision}{suffix}");
    // Rebuild when HEAD moves (a checkout, or a commit to the branch it names) or the
    // index changes. Git says where those files are: in a worktree `.git` is a file, and
    // HEAD and the index live in the main repository's `.git/worktrees/NAME`.
    let git_path = |path: &str| git(&["rev-parse", "--git-path", path]);
    let mut watch: Vec<String> = ["HEAD", "index"].into_iter().filter_map(git_path).collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git_path(&r)) {
        watch.push(branch);
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// What `git ARGS` prints, trimmed; `None` when git fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
