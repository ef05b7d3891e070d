//! Embeds `sql/` into the library and generates the gRPC code of `proto/`
//! at compile time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    embed_migrations(&manifest_dir.join("../sql"), &out_dir.join("migrations.rs"))?;
    compile_protos(&manifest_dir.join("../proto"), &out_dir)?;
    Ok(())
}

/// The files under `proto/` to compile; their imports are found on their own.
const PROTO_FILES: &[&str] = &["hipstershop/demo.proto", "orders/v1/orders.proto"];

/// Generates messages, clients and servers for [`PROTO_FILES`] into `OUT_DIR`
/// (one `<package>.rs` per package, for `tonic::include_proto!`) and writes
/// `file_descriptor_set.bin` for gRPC server reflection.
///
/// `protox` parses the files in pure Rust, so building needs no `protoc`.
fn compile_protos(proto_dir: &Path, out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // A directory: cargo rescans it, so added and edited files are picked up.
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let mut compiler = protox::Compiler::new([proto_dir])?;
    // Imports (google/protobuf/timestamp.proto) are included so reflection
    // clients can resolve every type; source info carries the comments into
    // the generated docs.
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // Well-known types come from `prost-types`; generating them again would
    // only add an unused `google.protobuf.rs`.
    let mut fds = compiler.file_descriptor_set();
    fds.file.retain(|file| file.package() != "google.protobuf");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Our own rerun-if-changed above covers the whole directory.
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

/// Writes `MIGRATIONS` (every `NNNN_name.sql`, in version order) and `GRANTS`
/// (`grants.sql`) as `include_str!`s, so the binaries carry their schema.
fn embed_migrations(sql_dir: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // A directory: cargo rescans it, so added and edited files are picked up.
    println!("cargo:rerun-if-changed={}", sql_dir.display());
    let sql_dir = sql_dir.canonicalize()?;
    let mut files = Vec::new();
    for entry in fs::read_dir(&sql_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("non-UTF-8 file name in sql/")?
            .to_owned();
        if name == "grants.sql" {
            continue;
        }
        let version = name
            .split_once('_')
            .filter(|(v, rest)| v.len() == 4 && rest.ends_with(".sql"))
            .and_then(|(v, _)| v.parse::<i32>().ok())
            .ok_or_else(|| format!("sql/{name}: expected NNNN_name.sql or grants.sql"))?;
        files.push((version, name, path));
    }
    files.sort();
    for pair in files.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(format!("sql/: {} and {} share a version", pair[0].1, pair[1].1).into());
        }
    }
    let mut code = String::from("pub(crate) static MIGRATIONS: &[(i32, &str, &str)] = &[\n");
    for (version, name, path) in &files {
        writeln!(
            code,
            "    ({version}, {name:?}, include_str!({:?})),",
            path.display().to_string()
        )?;
    }
    code.push_str("];\n");
    writeln!(
        code,
        "pub(crate) static GRANTS: &str = include_str!({:?});",
        sql_dir.join("grants.sql").display().to_string()
    )?;
    fs::write(out, code)?;
    Ok(())
}
