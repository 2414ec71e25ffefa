//! TLS for SSL and SASL_SSL listeners (rustls, TLS 1.2 and 1.3), and the development
//! certificate authority generated on first start.

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::ClientAuth;

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

/// Writes a client certificate for mutual TLS (`client.pem`, `client.key`) into `out`,
/// signed by the CA `ca.pem` / `ca.key` of `ca_dir` (such as the development CA): it names
/// `project` and access key `key_id` both ways the gateway reads them (a
/// `loggate://<project>/<key_id>` URI SAN, and subject O and CN), for TLS client auth only.
pub fn generate_client(ca_dir: &Path, out: &Path, project: &str, key_id: &str) -> Result<(), TlsError> {
    super::mtls::check_identity(project, key_id).map_err(|e| TlsError::Invalid(e.to_string()))?;
    let read = |name: &str| {
        let path = ca_dir.join(name);
        fs::read_to_string(&path).map_err(io_err(&path))
    };
    let (ca_pem, ca_key_pem) = (read("ca.pem")?, read("ca.key")?);
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    // The CA's name and key, to sign with (rcgen re-creates the issuer from them).
    let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let uri = super::mtls::identity_uri(project, key_id);
    params.subject_alt_names =
        vec![rcgen::SanType::URI(uri.try_into().map_err(|_| TlsError::Invalid("identity URI is not ASCII".into()))?)];
    params.distinguished_name.push(DnType::OrganizationName, project);
    params.distinguished_name.push(DnType::CommonName, key_id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key)?;

    fs::create_dir_all(out).map_err(io_err(out))?;
    write_private(&out.join("client.key"), &key.serialize_pem())?;
    fs::write(out.join("client.pem"), cert.pem()).map_err(io_err(&out.join("client.pem")))?;
    Ok(())
}

/// The TLS files of the configuration: server certificate chain and key, and the CA
/// certificates of client certificates (for listeners with `client_auth = "required"`).
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

/// The rustls configurations a listener handshakes with.
struct Configs {
    /// No client certificate asked for.
    server: Arc<ServerConfig>,
    /// A client certificate signed by `client_ca` required (when one is configured).
    client_auth: Option<Arc<ServerConfig>>,
}

/// The server certificate of every TLS listener, and the client CA of those that require
/// client certificates. A configuration reload replaces them whole: a connection
/// handshakes with the ones in place when it arrives, and connections already open keep
/// theirs.
#[derive(Clone)]
pub struct Certificates {
    configs: Arc<ArcSwap<Configs>>,
    /// Whether a client CA was loaded at start: listeners may require client certificates,
    /// so a reload may not take it away.
    client_ca_required: bool,
}

impl Certificates {
    /// Loads the certificate chain and key (and the client CA) from PEM files.
    pub fn load(files: TlsFiles<'_>) -> Result<Self, TlsError> {
        Ok(Self { configs: Arc::new(ArcSwap::from_pointee(configs(files)?)), client_ca_required: files.client_ca.is_some() })
    }

    /// Loads them again (after a change of the files or of their paths); on an error the
    /// ones in place stay.
    pub fn replace(&self, files: TlsFiles<'_>) -> Result<(), TlsError> {
        if self.client_ca_required && files.client_ca.is_none() {
            return Err(TlsError::Invalid(
                "[tls] client_ca may not be removed while listeners require client certificates (restart to do so)".into(),
            ));
        }
        self.configs.store(Arc::new(configs(files)?));
        Ok(())
    }

    /// An acceptor with the current certificate, asking for a client certificate as
    /// `client_auth` says; None when that needs a client CA and none is loaded.
    pub fn acceptor(&self, client_auth: ClientAuth) -> Option<tokio_rustls::TlsAcceptor> {
        let configs = self.configs.load();
        let config = match client_auth {
            ClientAuth::None => configs.server.clone(),
            ClientAuth::Required => configs.client_auth.clone()?,
        };
        Some(tokio_rustls::TlsAcceptor::from(config))
    }

    /// Whether client certificates can be verified (a client CA is loaded).
    pub fn verifies_clients(&self) -> bool {
        self.configs.load().client_auth.is_some()
    }
}

fn configs(files: TlsFiles<'_>) -> Result<Configs, TlsError> {
    let (certs, key) = read_cert_and_key(files.cert, files.key)?;
    let client_auth = match files.client_ca {
        Some(ca) => Some(client_auth_config(certs.clone(), key.clone_key(), ca)?),
        None => None,
    };
    Ok(Configs { server: build(certs, key, None)?, client_auth })
}

/// Builds the rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = read_cert_and_key(cert, key)?;
    build(certs, key, None)
}

/// The CA certificates in a PEM file, as the roots client certificates must chain to.
pub fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        roots
            .add(cert.map_err(io_err(path))?)
            .map_err(|e| TlsError::Invalid(format!("{}: not a usable CA certificate: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Invalid(format!("{}: no CA certificate found", path.display())));
    }
    Ok(roots)
}

/// A server configuration that requires a client certificate chaining to the CA
/// certificates of `client_ca` (valid now, for TLS client authentication).
fn client_auth_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = client_roots(client_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", client_ca.display())))?;
    build(certs, key, Some(verifier))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_cert_and_key(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
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
    Ok((certs, key))
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok(Arc::new(config))
}
