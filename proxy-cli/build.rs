//! Records the git revision for `proxy --version` (`unknown` outside a git checkout, as in
//! a source tarball).

use std::process::Command;

fn main() {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { "-modified" } else { "" };
    println!("cargo:rustc-env=PROXY_GIT_REVISION={revision}{suffix}");
    // Rebuild when HEAD moves (a checkout, or a commit to the branch it names) or the
    // index changes.
    let mut watch = vec!["../.git/HEAD".to_owned(), "../.git/index".to_owned()];
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        watch.push(format!("../.git/{branch}"));
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
