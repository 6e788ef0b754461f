//! The Tox peers of these tests run on the libtoxcore the build found (and the one CI asked for:
//! `scripts/test-toxcore-newest.sh`); the daemons' start logs are checked where they start.

#[test]
fn tox_peers_run_on_the_libtoxcore_the_build_found() {
    let version = toxmail_tests::expected_libtoxcore();
    println!("libtoxcore {version}");
}
