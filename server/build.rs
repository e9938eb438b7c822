//! Build script: tells `rust_embed` (server/src/web.rs) where the web client's build output is,
//! as an absolute path with no `..` and no symlinks in it (`YUNTIAO_WEB_DIST`).
//!
//! Why: a debug build reads the client from disk at request time, and checks that each file it
//! reads lies under the folder it was compiled with. Given `../web-client/dist/` and compiled
//! while that folder did not exist yet, it kept the path with its `..`, which no real file path
//! starts with, so such a binary answered "not built" even after the client was built. The
//! workspace directory itself always exists, so its canonical form is known here.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("the server crate lives in the workspace");
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let dist = root.join("web-client").join("dist");
    println!("cargo:rustc-env=YUNTIAO_WEB_DIST={}", dist.display());
    println!("cargo:rerun-if-changed=build.rs");
}
