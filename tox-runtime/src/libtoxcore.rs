//! Which libtoxcore this process runs on, which one its bindings were generated from, and the
//! advisories that apply to it: logged by both daemons at start and shown by `check-config`.

use std::fmt;

use crate::instance;
use crate::sys;

/// A c-toxcore release, ordered as releases are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The library the dynamic loader (or the static link) gave this process.
    pub fn running() -> Self {
        let (major, minor, patch) = instance::linked_version();
        Version::new(major, minor, patch)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The `tox.h` the bindings were generated from (`build.rs`, through pkg-config).
pub const BUILT_AGAINST: Version = Version::new(
    sys::TOX_VERSION_MAJOR,
    sys::TOX_VERSION_MINOR,
    sys::TOX_VERSION_PATCH,
);

/// The oldest release the bindings build against.
pub const MINIMUM: Version = Version::new(0, 2, 18);

/// The first release without the critical bug of advisory GHSA-42vg-9mg3-399f.
pub const ADVISORY_FIXED_IN: Version = Version::new(0, 2, 23);

/// A warning for an operator when `version` has a known security advisory, naming it and the
/// release that fixes it; `None` when none applies.
pub fn advisory(version: Version) -> Option<String> {
    (version < ADVISORY_FIXED_IN).then(|| {
        format!(
            "libtoxcore {version} is affected by the critical bug of advisory \
             GHSA-42vg-9mg3-399f, fixed in {ADVISORY_FIXED_IN}: run libtoxcore \
             {ADVISORY_FIXED_IN} or newer (docs/operations.md, \"Which libtoxcore\")"
        )
    })
}

/// Logs the running libtoxcore once at daemon start, with a warning when an advisory applies or
/// when the loader gave an older library than the headers the bindings were generated from.
pub fn log_at_start() {
    let running = Version::running();
    tracing::info!(libtoxcore = %running, headers = %BUILT_AGAINST, "libtoxcore version");
    if running < BUILT_AGAINST {
        tracing::warn!(
            "running libtoxcore {running} but built against {BUILT_AGAINST}: the dynamic \
             loader found another libtoxcore than the one pkg-config named at build time"
        );
    }
    if let Some(warning) = advisory(running) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_names_ghsa_below_0_2_23_and_nothing_from_it() {
        for old in [(0, 2, 18), (0, 2, 22), (0, 1, 99)] {
            let v = Version::new(old.0, old.1, old.2);
            let warning = advisory(v).expect("an advisory applies");
            assert!(warning.contains("GHSA-42vg-9mg3-399f"), "{warning}");
            assert!(warning.contains(&v.to_string()), "{warning}");
            assert!(warning.contains("0.2.23"), "{warning}");
        }
        for fixed in [(0, 2, 23), (0, 2, 30), (0, 3, 0), (1, 0, 0)] {
            assert_eq!(advisory(Version::new(fixed.0, fixed.1, fixed.2)), None);
        }
    }

    #[test]
    fn versions_order_as_releases() {
        assert!(Version::new(0, 2, 9) < Version::new(0, 2, 18));
        assert!(Version::new(0, 2, 99) < Version::new(0, 3, 0));
        assert_eq!(Version::new(0, 2, 22).to_string(), "0.2.22");
    }

    #[test]
    fn the_running_library_is_the_one_the_bindings_were_built_against() {
        // A newer library would be compatible, but build.rs links what pkg-config named: the same.
        assert_eq!(Version::running(), BUILT_AGAINST);
        assert!(BUILT_AGAINST >= MINIMUM);
    }
}
