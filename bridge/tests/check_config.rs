//! `toxmail-bridge check-config`, the real binary against temp configs and a private PostgreSQL:
//! each problem it must catch makes it fail with a line naming the file, the key or the
//! database's host:port; a sound site passes.

mod cli;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cli::{BOOTSTRAP, Outcome, Scene};
use toxmail_tests::postgres::{PgServer, free_tcp_port};

/// Asserts on what `check-config` printed.
trait Problems {
    fn problems(&self) -> Vec<&str>;
    fn one_problem(&self, needles: &[&str]);
}

impl Problems for Outcome {
    /// The `problem:` lines; asserts the command failed.
    fn problems(&self) -> Vec<&str> {
        assert!(!self.ok, "check-config passed:\n{}", self.stdout);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("problem: "))
            .collect();
        assert!(
            self.stderr
                .contains(&format!("found {} problem", lines.len())),
            "{}",
            self.stderr
        );
        lines
    }

    /// Exactly one problem, containing every one of `needles`.
    fn one_problem(&self, needles: &[&str]) {
        let problems = self.problems();
        assert_eq!(problems.len(), 1, "{}", self.stderr);
        for needle in needles {
            assert!(
                problems[0].contains(needle),
                "{needle:?} in {}",
                problems[0]
            );
        }
    }
}

fn postgres() -> PgServer {
    PgServer::start().expect("private PostgreSQL")
}

/// A migrated database and a site with identity bob@b.test.
fn site_with_bob() -> (PgServer, Scene) {
    let pg = postgres();
    let scene = Scene::new(&pg.url());
    scene.admin(&["migrate"]);
    scene.admin(&["identity", "add", "bob@b.test"]);
    (pg, scene)
}

fn bob_savedata(scene: &Scene) -> PathBuf {
    scene.state_dir().join("identities").join("bob@b.test.tox")
}

#[test]
fn check_config_passes_on_a_sound_site() {
    let (_pg, scene) = site_with_bob();
    let out = scene.check();
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("configuration OK"), "{}", out.stdout);
    assert!(out.stdout.contains("1 identity"), "{}", out.stdout);
    // The libtoxcore this build links: below 0.2.23 the advisory is named, and only a warning.
    let linked = tox_runtime::libtoxcore::Version::running();
    let warned =
        out.stdout.contains("warning: libtoxcore") && out.stdout.contains("GHSA-42vg-9mg3-399f");
    assert_eq!(
        warned,
        tox_runtime::libtoxcore::advisory(linked).is_some(),
        "libtoxcore {linked}: {}",
        out.stdout
    );
}

#[test]
fn check_config_missing_state_dir_fails_naming_it() {
    let (pg, scene) = site_with_bob();
    let gone = scene.dir.path().join("no-such-state");
    scene.write_config(&pg.url(), &format!("state_dir = {gone:?}"), BOOTSTRAP);
    let out = scene.check();
    let problems = out.problems();
    let shown = gone.display().to_string();
    assert!(
        problems[0].contains(&shown) && problems[0].contains("does not exist"),
        "{}",
        out.stderr
    );
    // bob's savedata is not under the wrong state_dir either: reported too, with its path.
    assert!(
        problems
            .iter()
            .any(|p| p.contains("missing") && p.contains(&shown)),
        "{}",
        out.stderr
    );
}

#[test]
fn check_config_state_dir_that_is_a_file_fails_naming_it() {
    let pg = postgres();
    let scene = Scene::new(&pg.url());
    scene.admin(&["migrate"]);
    let file = scene.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    scene.write_config(&pg.url(), &format!("state_dir = {file:?}"), BOOTSTRAP);
    let shown = file.display().to_string();
    scene
        .check()
        .one_problem(&["bridge.state_dir", &shown, "not a directory"]);
}

#[test]
fn check_config_key_file_readable_by_others_fails_naming_it() {
    let (_pg, scene) = site_with_bob();
    std::fs::set_permissions(scene.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = scene.key_file().display().to_string();
    scene
        .check()
        .one_problem(&["key file", &shown, "chmod 600"]);
    std::fs::remove_file(scene.key_file()).unwrap();
    scene.check().one_problem(&["key file", &shown]);
}

#[test]
fn check_config_missing_savedata_of_a_listed_identity_fails_naming_the_file() {
    let (_pg, scene) = site_with_bob();
    std::fs::remove_file(bob_savedata(&scene)).unwrap();
    let shown = bob_savedata(&scene).display().to_string();
    scene
        .check()
        .one_problem(&["identity bob@b.test", &shown, "missing"]);
}

#[test]
fn check_config_savedata_the_key_file_cannot_decrypt_fails_naming_the_file() {
    let (_pg, scene) = site_with_bob();
    std::fs::write(scene.key_file(), "another key file, also 32 bytes!").unwrap();
    let shown = bob_savedata(&scene).display().to_string();
    scene
        .check()
        .one_problem(&["identity bob@b.test", &shown, "key file"]);
}

#[test]
fn check_config_unmigrated_schema_fails_saying_run_migrate() {
    let pg = postgres();
    let scene = Scene::new(&pg.url());
    let place = format!("127.0.0.1:{} (db toxmail, user postgres)", pg.port());
    scene
        .check()
        .one_problem(&[&place, "run toxmail-bridge migrate"]);
}

#[tokio::test]
async fn check_config_schema_newer_than_the_binary_fails_saying_so() {
    let (pg, scene) = site_with_bob();
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
        .await
        .unwrap();
    let place = format!("127.0.0.1:{}", pg.port());
    scene
        .check()
        .one_problem(&[&place, "999", "older than the database"]);
}

#[test]
fn check_config_without_a_bootstrap_node_fails_unless_local_discovery_is_on() {
    let (pg, scene) = site_with_bob();
    let state = format!("state_dir = {:?}", scene.state_dir());
    scene.write_config(&pg.url(), &state, "");
    scene
        .check()
        .one_problem(&["tox.bootstrap", "no bootstrap node"]);
    scene.write_config(&pg.url(), &state, "local_discovery = true");
    let out = scene.check();
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("warning: tox.bootstrap is empty"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_port_range_smaller_than_the_identity_count_fails_saying_how_wide() {
    let (_pg, scene) = site_with_bob();
    scene.admin(&["identity", "add", "carol@b.test"]);
    let text = std::fs::read_to_string(&scene.config).unwrap();
    let start = text.find("port_range = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let one_port = text.replace(&text[start..end], "port_range = [34100, 34100]");
    std::fs::write(&scene.config, one_port).unwrap();
    scene.check().one_problem(&[
        "tox.port_range [34100, 34100] has 1 UDP port, fewer than the 2 identities",
        "widen it to [34100, 34101]",
    ]);
}

#[test]
fn check_config_unreachable_database_names_host_port_db_and_user_not_the_password() {
    let port = free_tcp_port().unwrap();
    let url = format!("host=127.0.0.1 port={port} user=mail dbname=queue password=hunter2-secret");
    let scene = Scene::new(&url);
    let out = scene.check();
    out.one_problem(&[&format!(
        "database at 127.0.0.1:{port} (db queue, user mail)"
    )]);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let pg = postgres();
    let scene = Scene::new(&pg.url());
    std::fs::set_permissions(scene.key_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let gone: &Path = &scene.dir.path().join("gone");
    scene.write_config(&pg.url(), &format!("state_dir = {gone:?}"), "");
    let out = scene.check();
    let problems = out.problems();
    assert_eq!(problems.len(), 4, "{}", out.stderr);
    for needle in ["state_dir", "tox.bootstrap", "key file", "migrate"] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {}",
            out.stderr
        );
    }
}
