//! `--tls-self-signed`: a development certificate for localhost, 127.0.0.1 and ::1.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// A certificate and key in PEM, and where they were written.
pub(crate) struct DevCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
}

/// Make a self-signed certificate for localhost, 127.0.0.1 and ::1 and write it to `cert_path`
/// (default: `wsx-dev-cert.pem` in the temporary directory), the key next to it (`*.key.pem`,
/// mode 0600).
pub(crate) fn make(cert_path: Option<PathBuf>) -> anyhow::Result<DevCert> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).context("cannot make a self-signed certificate")?;
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let cert_path = cert_path.unwrap_or_else(|| std::env::temp_dir().join("wsx-dev-cert.pem"));
    let key_path = key_path_for(&cert_path);
    std::fs::write(&cert_path, &cert_pem).with_context(|| format!("cannot write {}", cert_path.display()))?;
    write_private(&key_path, key_pem.as_bytes()).with_context(|| format!("cannot write {}", key_path.display()))?;
    Ok(DevCert { cert_pem, key_pem, cert_path, key_path })
}

/// `dir/name.pem` → `dir/name.key.pem`.
fn key_path_for(cert: &Path) -> PathBuf {
    let stem = cert.file_stem().and_then(|s| s.to_str()).unwrap_or("wsx-dev-cert");
    cert.with_file_name(format!("{stem}.key.pem"))
}

/// Write a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
