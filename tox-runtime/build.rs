//! Finds Debian's libtoxcore through pkg-config and generates the FFI bindings from its installed headers.
//! The bindings are pinned to c-toxcore 0.2.18: its events API differs from 0.2.19, and the
//! rest of this crate is written against the 0.2.18 `tox.h`.

use std::env;
use std::path::PathBuf;

fn main() {
    let lib = pkg_config::Config::new()
        .range_version("0.2.18".."0.2.19")
        .probe("toxcore")
        .unwrap_or_else(|e| {
            panic!(
                "c-toxcore 0.2.18 not found through pkg-config ({e}).\n\
                 On Debian: apt-get install libtoxcore-dev pkg-config"
            )
        });

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
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder.generate().expect(
        "bindgen could not parse tox.h (is libclang installed? apt-get install libclang-dev)",
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("tox_sys.rs"))
        .expect("write generated bindings");
}
