//! TLS for SSL and SASL_SSL listeners (rustls, TLS 1.2 and 1.3), and the development
//! certificate authority generated on first start.

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Errors loading or generating TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.display().to_string(), source }
}

/// Names the development server certificate is valid for.
/// `*.loggate.localhost` lets tests and demos use SNI names `<project>.loggate.localhost`.
pub const DEV_HOSTS: &[&str] = &["localhost", "*.loggate.localhost", "127.0.0.1", "::1"];

/// Writes a new CA (`ca.pem`, `ca.key`) and a server certificate signed by it
/// (`server.pem`, `server.key`) for `hosts` into `dir`.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "loggate development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, hosts.first().map(String::as_str).unwrap_or("localhost"));
    let server = params.signed_by(&server_key, &ca, &ca_key)?;

    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    fs::write(dir.join("ca.pem"), ca.pem()).map_err(io_err(&dir.join("ca.pem")))?;
    write_private(&dir.join("server.key"), &server_key.serialize_pem())?;
    fs::write(dir.join("server.pem"), server.pem()).map_err(io_err(&dir.join("server.pem")))?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

/// The server certificate of every TLS listener. A configuration reload replaces it whole:
/// a connection handshakes with the one in place when it arrives, and connections already
/// open keep theirs.
#[derive(Clone)]
pub struct Certificates(Arc<ArcSwap<ServerConfig>>);

impl Certificates {
    /// Loads the certificate chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self(Arc::new(ArcSwap::new(server_config(cert, key)?))))
    }

    /// Loads them again (after a change of the files or of their paths); on an error the
    /// certificate in place stays.
    pub fn replace(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.0.store(server_config(cert, key)?);
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.load_full())
    }
}

/// Builds the rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(fs::File::open(cert).map_err(io_err(cert))?))
            .collect::<Result<_, _>>()
            .map_err(io_err(cert))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!("{}: no certificate found", cert.display())));
    }
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut BufReader::new(fs::File::open(key).map_err(io_err(key))?))
            .map_err(io_err(key))?
            .ok_or_else(|| TlsError::Invalid(format!("{}: no private key found", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok(Arc::new(config))
}
