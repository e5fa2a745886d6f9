//! `docs/settings.md` is generated from the table of keys: this test fails when it is
//! out of date, and rewrites it when run with `UPDATE_SETTINGS_DOC=1`.

use std::path::PathBuf;

#[test]
fn docs_settings_md_is_generated_from_the_keys() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/settings.md");
    let want = proxy_core::spec::reference_markdown();
    if std::env::var_os("UPDATE_SETTINGS_DOC").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()))
            + 1;
        panic!(
            "{} is not what proxy_core::spec::KEYS generates (first difference at line \
             {line}); it is generated, never edited by hand. Regenerate it with\n\n    \
             UPDATE_SETTINGS_DOC=1 cargo test -p proxy-core --test settings_doc\n\nand \
             commit the result.",
            path.display()
        );
    }
}
