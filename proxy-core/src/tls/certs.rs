//! Certificates and keys from PEM files: one chain and its key (`tls_cert`, `tls_key`),
//! a directory of them (`tls_dir`), the names each serves (its DNS subject alternative
//! names), and CA bundles (`tls_client_ca`). Errors name the file and what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate chain with its key, and the names it serves.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The file it came from (the certificate's, for a pair), for messages.
    pub(crate) file: PathBuf,
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names from its subject alternative names, lower case; `*.` wildcards kept.
    pub(crate) names: Vec<String>,
}

/// The certificates (leaf first) of the PEM file `path`.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: no PEM certificate (BEGIN CERTIFICATE) in it"
        ));
    }
    Ok(certs)
}

/// The private key of the PEM file `path` (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{}: no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it",
            path.display()
        ),
        e => format!("{}: {}", path.display(), pem_error(&e)),
    })
}

/// A PEM error as a person reads it.
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("not valid PEM: {e:?}"),
    }
}

/// The chain of `cert` with the key of `key` (the same file for both is fine), checked
/// to belong together.
pub(crate) fn pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, String> {
    let chain = certificates(cert)?;
    let names = dns_names(&chain[0]).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_der = private_key(key)?;
    let signing = (provider.key_provider.load_private_key(key_der))
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!(
            "{}: the private key is not the one of the certificate in {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Loaded {
        file: cert.to_owned(),
        key: Arc::new(certified),
        names,
    })
}

/// Every chain and key of the directory `dir`: each `NAME.pem` holding a chain and its
/// key, each `NAME.crt` with its `NAME.key`, and each subdirectory holding `tls.crt` and
/// `tls.key` (a mounted Kubernetes TLS Secret), in name order. Other files are skipped.
pub(crate) fn directory(dir: &Path, provider: &CryptoProvider) -> Result<Vec<Loaded>, String> {
    let shown = dir.display();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{shown}: {e}"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    entries.sort();
    let mut loaded = Vec::new();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str());
        if path.is_dir() {
            let (cert, key) = (path.join("tls.crt"), path.join("tls.key"));
            if cert.is_file() && key.is_file() {
                loaded.push(pair(&cert, &key, provider)?);
            }
        } else if ext == Some("pem") {
            loaded.push(pair(&path, &path, provider)?);
        } else if ext == Some("crt") {
            let key = path.with_extension("key");
            if !key.is_file() {
                return Err(format!(
                    "{}: no key beside it ({} is missing)",
                    path.display(),
                    key.display()
                ));
            }
            loaded.push(pair(&path, &key, provider)?);
        }
    }
    if loaded.is_empty() {
        return Err(format!(
            "{shown}: no certificates in it (NAME.pem with a chain and its key, NAME.crt with \
             NAME.key, or a directory with tls.crt and tls.key)"
        ));
    }
    Ok(loaded)
}

/// The DNS names a leaf certificate serves, from its subject alternative names, lower
/// case; wildcards as `*.domain`.
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("not a certificate this proxy can read: {e}"))?;
    Ok(cert
        .valid_dns_names()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .collect())
}

/// The CA certificates of the PEM bundle `path`, as trust anchors.
pub(crate) fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}
