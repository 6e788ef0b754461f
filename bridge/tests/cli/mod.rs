//! A site's files for running the real `toxmail-bridge` binary in tests: a state_dir, a key
//! file (mode 0600) and a config pointing at a database; `run` returns the exit and output.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

pub const KEY: &str = "test key file, 32 bytes or more!";
pub const BOOTSTRAP: &str = r#"bootstrap = [{ address = "127.0.0.1:33445", key = "1111111111111111111111111111111111111111111111111111111111111111" }]"#;

/// A site's files: a state_dir, a key file (mode 0600) and a config pointing at `url`.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Scene {
    /// A site whose database is at `url`, with a bootstrap node configured.
    pub fn new(url: &str) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let key = dir.path().join("bridge.key");
        std::fs::write(&key, KEY).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("bridge.toml");
        let scene = Scene { dir, config };
        scene.write_config(
            url,
            &format!("state_dir = {:?}", scene.state_dir()),
            BOOTSTRAP,
        );
        scene
    }

    pub fn write_config(&self, url: &str, state_dir: &str, tox: &str) {
        let (lo, hi) = tox_runtime::LOOPBACK_PORTS;
        let text = format!(
            "[bridge]\nhostname = \"mx.b.test\"\n{state_dir}\nkey_file = {key:?}\n\
             [database]\nurl = {url:?}\n\
             [tox]\nport_range = [{lo}, {hi}]\n{tox}\n\
             [inbound]\nnext_hop = \"smtp:127.0.0.1:25\"\nlocal_domains = [\"b.test\"]\n",
            key = self.key_file(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("bridge.key")
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, &[])
    }

    /// [`Scene::run`] with more environment variables.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let out = Command::new(env!("CARGO_BIN_EXE_toxmail-bridge"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("TOXMAIL_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok, "{args:?}: {}", out.stderr);
        out.stdout
    }

    pub fn check(&self) -> Outcome {
        self.run(&["check-config"])
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}
