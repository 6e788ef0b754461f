//! `identity export` / `identity import`, the real binary against private PostgreSQL servers:
//! an identity moves to a fresh site with its Tox ID, its savedata re-encrypted under the new
//! host's key file; a wrong passphrase, a changed byte or a conflicting identity change nothing.
//! (Mail queued for a moved identity reaching its new host: tests/e2e/identity_move.rs.)

mod cli;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cli::{KEY, Scene};
use toxmail_tests::postgres::PgServer;

const PASSPHRASE: &str = "correct horse battery staple";
const OTHER_KEY: &str = "the new host's key file, 32+ B!!";

/// A migrated site on its own PostgreSQL with the given identities.
fn site(identities: &[&str]) -> (PgServer, Scene) {
    let pg = PgServer::start().expect("private PostgreSQL");
    let scene = Scene::new(&pg.url());
    scene.admin(&["migrate"]);
    for address in identities {
        scene.admin(&["identity", "add", address]);
    }
    (pg, scene)
}

/// A site on a new database whose key file differs from every other site's.
fn fresh_site() -> (PgServer, Scene) {
    let (pg, scene) = site(&[]);
    std::fs::write(scene.key_file(), OTHER_KEY).unwrap();
    (pg, scene)
}

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `identity list` as (address, Tox ID) lines.
fn listed(scene: &Scene) -> Vec<String> {
    scene
        .admin(&["identity", "list"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Exports `args` (an address or `--all`) from `scene` into a new bundle file.
fn export(scene: &Scene, args: &[&str]) -> PathBuf {
    let pass = secret_file(scene.dir.path(), "pass", PASSPHRASE);
    let out = scene.dir.path().join("bundle.txb");
    let mut all = vec!["identity", "export"];
    all.extend_from_slice(args);
    let (out_s, pass_s) = (out.to_str().unwrap(), pass.to_str().unwrap());
    all.extend_from_slice(&["--out", out_s, "--passphrase-file", pass_s]);
    scene.admin(&all);
    out
}

fn import(scene: &Scene, bundle: &Path, passphrase: &str) -> cli::Outcome {
    let pass = secret_file(scene.dir.path(), "import-pass", passphrase);
    scene.run(&[
        "identity",
        "import",
        bundle.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ])
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn identity_export_then_import_on_a_fresh_site_keeps_the_tox_id_under_the_new_key_file() {
    let (_pg_a, a) = site(&["bob@b.test", "carol@b.test"]);
    let bundle = export(&a, &["bob@b.test"]);
    let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&bundle).unwrap();
    assert!(bytes.starts_with(b"TOXMAILB\x01"), "versioned magic header");
    assert!(!bytes.windows(4).any(|w| w == b"bob@"), "sealed");

    let (_pg_b, b) = fresh_site();
    let out = import(&b, &bundle, PASSPHRASE);
    assert!(out.ok, "{}", out.stderr);
    let bob = listed(&a)
        .into_iter()
        .find(|l| l.starts_with("bob@b.test\t"))
        .unwrap();
    assert!(
        out.stdout.contains(&format!("{bob}\timported")),
        "{}",
        out.stdout
    );
    assert_eq!(listed(&b), vec![bob], "same Tox ID, carol stays behind");

    // Re-encrypted: the new key file opens it, the old one does not.
    let savedata = b.state_dir().join("identities").join("bob@b.test.tox");
    assert!(tox_runtime::read_savedata(&savedata, Some(OTHER_KEY.as_bytes())).is_ok());
    assert!(tox_runtime::read_savedata(&savedata, Some(KEY.as_bytes())).is_err());
    let check = b.check();
    assert!(check.ok, "{}", check.stderr);
    let leftovers: Vec<_> = files_in(&b.state_dir())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".import")
        })
        .collect();
    assert!(leftovers.is_empty(), "staging removed: {leftovers:?}");

    let again = import(&b, &bundle, PASSPHRASE);
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again.stdout.contains("already here, unchanged"),
        "{}",
        again.stdout
    );
}

#[test]
fn identity_import_wrong_passphrase_or_changed_byte_is_refused_and_changes_nothing() {
    let (_pg_a, a) = site(&["bob@b.test"]);
    let bundle = export(&a, &["--all"]);
    let (_pg_b, b) = fresh_site();
    let wrong = import(&b, &bundle, "a wrong passphrase, long enough");
    assert!(!wrong.ok);
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains("nothing imported"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains(bundle.to_str().unwrap()),
        "{}",
        wrong.stderr
    );

    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = b.dir.path().join("tampered.txb");
    std::fs::write(&tampered, &bytes).unwrap();
    let changed = import(&b, &tampered, PASSPHRASE);
    assert!(!changed.ok);
    assert!(
        changed.stderr.contains("changed or truncated"),
        "{}",
        changed.stderr
    );

    std::fs::write(&tampered, b"TOXMAILB\x07whatever").unwrap();
    let newer = import(&b, &tampered, PASSPHRASE);
    assert!(
        newer.stderr.contains("format version 7"),
        "{}",
        newer.stderr
    );

    assert!(listed(&b).is_empty(), "no identity listed");
    assert!(files_in(&b.state_dir().join("identities")).is_empty());
}

#[test]
fn identity_import_refuses_an_address_held_here_with_another_key() {
    let (_pg_a, a) = site(&["bob@b.test"]);
    let bundle = export(&a, &["bob@b.test"]);
    let (_pg_b, b) = site(&["bob@b.test"]);
    let before = listed(&b);
    let savedata = b.state_dir().join("identities").join("bob@b.test.tox");
    let file_before = std::fs::read(&savedata).unwrap();
    let out = import(&b, &bundle, PASSPHRASE);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("refusing to overwrite"),
        "{}",
        out.stderr
    );
    // (Before `identity list`, which loads the savedata and so saves it anew.)
    let untouched = std::fs::read(&savedata).unwrap() == file_before;
    assert!(untouched, "savedata left as it was");
    assert_eq!(listed(&b), before);
}

#[test]
fn identity_export_takes_the_passphrase_from_a_file_or_the_environment_never_argv() {
    let (_pg, a) = site(&["bob@b.test"]);
    let out = a.dir.path().join("env.txb");
    let out_s = out.to_str().unwrap();
    let args = ["identity", "export", "--all", "--out", out_s];
    let none = a.run(&args);
    assert!(!none.ok);
    assert!(
        none.stderr.contains("TOXMAIL_BUNDLE_PASSPHRASE"),
        "{}",
        none.stderr
    );
    let short = a.run_with(&args, &[("TOXMAIL_BUNDLE_PASSPHRASE", "short")]);
    assert!(short.stderr.contains("shorter than 16"), "{}", short.stderr);
    assert!(!out.exists());

    let ok = a.run_with(&args, &[("TOXMAIL_BUNDLE_PASSPHRASE", PASSPHRASE)]);
    assert!(ok.ok, "{}", ok.stderr);
    assert!(ok.stdout.contains("exported bob@b.test"), "{}", ok.stdout);
    let written = std::fs::read(&out).unwrap();
    let again = a.run_with(&args, &[("TOXMAIL_BUNDLE_PASSPHRASE", PASSPHRASE)]);
    assert!(!again.ok);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), written, "not overwritten");
}
