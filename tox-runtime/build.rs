//! Finds libtoxcore ≥ 0.2.18 through pkg-config and generates the FFI bindings from the headers it
//! names: Debian's package, or a newer build in a private prefix (`scripts/build-toxcore.sh`) when
//! `PKG_CONFIG_PATH` points there. The stable callback API this crate uses is the same in every
//! release from 0.2.18 to 0.2.23 (0.2.19 changed only the events API, which is not used).
//!
//! A libtoxcore outside `/usr` is linked statically: a private shared build has the same soname
//! (`libtoxcore.so.2`) as Debian's, and without an rpath — which a library's build script cannot
//! give the binaries of the crates that depend on it — the loader would pick Debian's at run time.

use std::env;
use std::path::{Path, PathBuf};

const MINIMUM: &str = "0.2.18";

fn main() {
    let found = probe(false, false);
    let private: Vec<&PathBuf> = found
        .link_paths
        .iter()
        .filter(|dir| !dir.starts_with("/usr"))
        .collect();
    let archive = private
        .iter()
        .map(|dir| dir.join("libtoxcore.a"))
        .find(|a| a.exists());
    if let Some(archive) = &archive {
        // Linked into the binaries: a rebuilt prefix (its headers unchanged) must relink them.
        println!("cargo::rerun-if-changed={}", archive.display());
    }
    let statik = archive.is_some();
    if !statik && let Some(dir) = private.first() {
        println!(
            "cargo::warning=libtoxcore in {} is a shared library outside /usr: binaries will load \
             whichever libtoxcore.so.2 the dynamic loader finds; build it static \
             (scripts/build-toxcore.sh does)",
            dir.display()
        );
    }
    let lib = probe(statik, true);
    generate(&lib.include_paths);
}

fn probe(statik: bool, cargo_metadata: bool) -> pkg_config::Library {
    pkg_config::Config::new()
        .atleast_version(MINIMUM)
        .statik(statik)
        .cargo_metadata(cargo_metadata)
        .probe("toxcore")
        .unwrap_or_else(|e| {
            panic!(
                "c-toxcore {MINIMUM} or newer not found through pkg-config ({e}).\n\
                 On Debian: apt-get install libtoxcore-dev pkg-config; for the newest Debian \
                 source: scripts/build-toxcore.sh, then PKG_CONFIG_PATH=<prefix>/lib/pkgconfig"
            )
        })
}

fn generate(include_paths: &[PathBuf]) {
    let mut builder = bindgen::Builder::default()
        .header_contents(
            "toxmail_tox.h",
            "#include <tox/tox.h>\n#include <tox/toxencryptsave.h>\n",
        )
        .allowlist_function("tox_.*")
        .allowlist_type("Tox|Tox_.*|TOX_.*")
        .allowlist_var("TOX_.*")
        // tox.h's "Tox" struct is opaque; keep it so.
        .opaque_type("Tox")
        .opaque_type("Tox_Options")
        // Newtype enums: a value the C side returns that Rust does not know is not UB.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for path in include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder.generate().expect(
        "bindgen could not parse tox.h (is libclang installed? apt-get install libclang-dev)",
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(Path::new(&out).join("tox_sys.rs"))
        .expect("write generated bindings");
}
