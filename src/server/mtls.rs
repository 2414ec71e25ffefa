//! Mutual TLS: who a verified client certificate says it is.
//!
//! On a listener with `client_auth = "required"`, rustls has verified the client's
//! certificate chain against `[tls] client_ca` (signature, validity, TLS client usage)
//! before anything here runs. The certificate then names the project and access key the
//! connection writes as, by one rule:
//!
//! 1. a URI subject alternative name `loggate://<project>/<AccessKeyId>`, if the
//!    certificate has one (two or more are refused);
//! 2. otherwise the subject's organization (O) is the project and its common name (CN)
//!    the access key id (exactly one of each).
//!
//! Project names are as in the configuration (letters, digits, `-`, `_`, `.`); key ids here
//! are letters, digits, `-`, `_`, `.` and `~`. The access key must be configured and one of
//! its grants must cover the project, as for a SASL login, and its grants decide which
//! logstores it writes. The login holds the key's credential, so a reload that removes the
//! key (or replaces its secret) revokes connections already open with it.

use sha2::{Digest, Sha256};

use crate::ingest::auth::{AuthError, KeyStore, Principal};
use crate::metrics::CertAuthResult;

/// The URI scheme of identity names in certificates.
const SCHEME: &str = "loggate://";

/// Longest project name or key id taken from a certificate.
const MAX_NAME: usize = 128;

/// The project and access key a certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub project: String,
    pub key_id: String,
}

/// Why a certificate names no usable identity. Certificate text in these messages is
/// escaped and cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the client certificate names no project and access key (no loggate://<project>/<AccessKeyId> URI SAN, nor subject O and CN)")]
    Missing,
    #[error("the client certificate has more than one {0}")]
    Ambiguous(&'static str),
    #[error("the client certificate's URI SAN {0} is not loggate://<project>/<AccessKeyId>")]
    BadUri(String),
    #[error("the client certificate names project {0}, which is not a valid project name")]
    BadProject(String),
    #[error("the client certificate names access key {0}, which is not a valid key id (letters, digits, '-', '_', '.', '~')")]
    BadKeyId(String),
}

/// Certificate text for messages: escaped, at most [`MAX_NAME`] characters.
fn shown(text: &str) -> String {
    text.chars().take(MAX_NAME).flat_map(char::escape_default).collect()
}

/// Checks a project name and key id as a certificate may carry them.
pub fn check_identity(project: &str, key_id: &str) -> Result<(), IdentityError> {
    if !crate::config::is_valid_name(project) {
        return Err(IdentityError::BadProject(shown(project)));
    }
    let key_ok = !key_id.is_empty()
        && key_id.len() <= MAX_NAME
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if !key_ok {
        return Err(IdentityError::BadKeyId(shown(key_id)));
    }
    Ok(())
}

/// The URI SAN that names `project` and `key_id`.
pub fn identity_uri(project: &str, key_id: &str) -> String {
    format!("{SCHEME}{project}/{key_id}")
}

/// Parses `loggate://<project>/<AccessKeyId>` (the scheme in any case).
fn parse_uri(uri: &str) -> Result<CertIdentity, IdentityError> {
    let rest = uri.get(SCHEME.len()..).filter(|_| is_identity_uri(uri)).ok_or_else(|| IdentityError::BadUri(shown(uri)))?;
    let (project, key_id) = rest.split_once('/').ok_or_else(|| IdentityError::BadUri(shown(uri)))?;
    check_identity(project, key_id)?;
    Ok(CertIdentity { project: project.to_string(), key_id: key_id.to_string() })
}

fn is_identity_uri(uri: &str) -> bool {
    uri.get(..SCHEME.len()).is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// The identity a certificate (DER) names, by the rule of this module.
pub fn identity(der: &[u8]) -> Result<CertIdentity, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let mut uris = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(uri) if is_identity_uri(uri) => Some(*uri),
            _ => None,
        });
    if let Some(uri) = uris.next() {
        if uris.next().is_some() {
            return Err(IdentityError::Ambiguous("loggate:// URI SAN"));
        }
        return parse_uri(uri);
    }
    let subject = cert.subject();
    let project = single(subject.iter_organization(), "subject O")?;
    let key_id = single(subject.iter_common_name(), "subject CN")?;
    let (Some(project), Some(key_id)) = (project, key_id) else {
        return Err(IdentityError::Missing);
    };
    check_identity(&project, &key_id)?;
    Ok(CertIdentity { project, key_id })
}

/// The text of the one attribute of a kind (None when there is none, an error when there
/// are more).
fn single<'a, 'b: 'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
    what: &'static str,
) -> Result<Option<String>, IdentityError> {
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(IdentityError::Ambiguous(what));
    }
    let text = first.as_str().map_err(|e| IdentityError::Unparsable(format!("{what}: {e}")))?;
    Ok(Some(text.to_string()))
}

/// The SHA-256 fingerprint of a certificate (DER), in hex: what log lines name it by.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Why a client certificate did not log in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertLoginError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("the client certificate names access key {key_id}, which is not configured")]
    UnknownKey { key_id: String },
    #[error("access key {key_id} (from the client certificate) may not write to project {project}")]
    NotAllowed { project: String, key_id: String },
    #[error("the client certificate names project {project}, which is not configured")]
    UnknownProject { project: String },
}

impl CertLoginError {
    /// The metric label of this failure.
    pub fn result(&self) -> CertAuthResult {
        match self {
            Self::NoCertificate => CertAuthResult::NoCertificate,
            Self::Identity(_) => CertAuthResult::NoIdentity,
            Self::UnknownKey { .. } => CertAuthResult::UnknownKey,
            Self::NotAllowed { .. } => CertAuthResult::NotAllowed,
            Self::UnknownProject { .. } => CertAuthResult::UnknownProject,
        }
    }
}

/// The principal of a verified client certificate (the end-entity certificate, DER): its
/// identity, a configured key allowed to write the project, and a configured project.
pub fn login(keys: &KeyStore, has_project: impl Fn(&str) -> bool, der: &[u8]) -> Result<Principal, CertLoginError> {
    let CertIdentity { project, key_id } = identity(der)?;
    let principal = keys.principal_for_certificate(&project, &key_id).map_err(|e| match e {
        AuthError::ProjectNotAllowed => CertLoginError::NotAllowed { project: project.clone(), key_id: key_id.clone() },
        _ => CertLoginError::UnknownKey { key_id: key_id.clone() },
    })?;
    if !has_project(&project) {
        return Err(CertLoginError::UnknownProject { project });
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(uris: &[&str], dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.to_string().try_into().unwrap())).collect();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    fn id(project: &str, key_id: &str) -> CertIdentity {
        CertIdentity { project: project.into(), key_id: key_id.into() }
    }

    #[test]
    fn the_uri_san_names_the_identity_first() {
        let both = cert(&["spiffe://cluster/ns/a", "loggate://demo/AK1"], &[(DnType::OrganizationName, "other"), (DnType::CommonName, "AK2")]);
        assert_eq!(identity(&both), Ok(id("demo", "AK1")));
        assert_eq!(identity(&cert(&["LOGGATE://ops/LG-x_1.~"], &[])), Ok(id("ops", "LG-x_1.~")));
    }

    #[test]
    fn without_a_uri_san_subject_o_and_cn_name_it() {
        let subject = cert(&["spiffe://cluster/ns/a"], &[(DnType::OrganizationName, "demo"), (DnType::CommonName, "AK1")]);
        assert_eq!(identity(&subject), Ok(id("demo", "AK1")));
        assert_eq!(identity(&cert(&[], &[(DnType::CommonName, "AK1")])), Err(IdentityError::Missing));
        assert_eq!(identity(&cert(&[], &[(DnType::OrganizationName, "demo")])), Err(IdentityError::Missing));
    }

    #[test]
    fn malformed_or_ambiguous_names_are_refused() {
        assert_eq!(identity(&cert(&["loggate://demo/AK1", "loggate://demo/AK2"], &[])), Err(IdentityError::Ambiguous("loggate:// URI SAN")));
        // A broken loggate URI does not fall back to the subject.
        let subject = [(DnType::OrganizationName, "demo"), (DnType::CommonName, "AK1")];
        assert!(matches!(identity(&cert(&["loggate://demo"], &subject)), Err(IdentityError::BadUri(_))));
        assert!(matches!(identity(&cert(&["loggate://demo/AK1/x"], &[])), Err(IdentityError::BadKeyId(_))));
        assert!(matches!(identity(&cert(&["loggate://demo/AK1?x=1"], &[])), Err(IdentityError::BadKeyId(_))));
        assert!(matches!(identity(&cert(&["loggate://de%6Do/AK1"], &[])), Err(IdentityError::BadProject(_))));
        assert!(matches!(identity(&cert(&["loggate://../AK1"], &[])), Err(IdentityError::BadProject(_))));
        assert!(matches!(identity(&cert(&["loggate:///AK1"], &[])), Err(IdentityError::BadProject(_))));
        let odd = cert(&[], &[(DnType::OrganizationName, "demo"), (DnType::CommonName, "AK1#\u{7}\"x")]);
        let Err(e) = identity(&odd) else { panic!("accepted") };
        assert_eq!(e.to_string().matches('\u{7}').count(), 0, "peer text is escaped: {e}");
        assert!(e.to_string().contains("AK1#\\u{7}\\\"x"), "{e}");
        assert!(matches!(identity(b"not a certificate"), Err(IdentityError::Unparsable(_))));
    }

    #[test]
    fn the_identity_uri_round_trips() {
        assert_eq!(parse_uri(&identity_uri("demo", "LGKEY")), Ok(id("demo", "LGKEY")));
    }

    fn keys(allow: &[&str]) -> KeyStore {
        // Parsed, so fields added to access keys later keep their defaults.
        let hash = crate::ingest::auth::SecretHash::new("unused-secret").to_string();
        let key: crate::config::AccessKeyConfig =
            toml::from_str(&format!("id = \"AK1\"\nsecret_hash = \"{hash}\"\nallow = {allow:?}\n")).unwrap();
        KeyStore::from_config(&[key]).unwrap()
    }

    #[test]
    fn a_login_takes_the_keys_grants_and_a_reload_without_the_key_revokes_it() {
        let store = keys(&["demo/app"]);
        let has = |p: &str| p == "demo" || p == "ops";
        let principal = login(&store, has, &cert(&["loggate://demo/AK1"], &[])).unwrap();
        assert_eq!((principal.project.as_str(), principal.key_id.as_deref()), ("demo", Some("AK1")));
        assert!(store.may_write(&principal, "app"));
        assert!(!store.may_write(&principal, "other"), "the key's grants apply");
        assert_eq!(
            login(&store, has, &cert(&["loggate://ops/AK1"], &[])),
            Err(CertLoginError::NotAllowed { project: "ops".into(), key_id: "AK1".into() })
        );
        assert_eq!(
            login(&store, has, &cert(&["loggate://demo/AK9"], &[])),
            Err(CertLoginError::UnknownKey { key_id: "AK9".into() })
        );
        let any = keys(&["*"]);
        assert_eq!(
            login(&any, has, &cert(&["loggate://nowhere/AK1"], &[])),
            Err(CertLoginError::UnknownProject { project: "nowhere".into() })
        );
        // The configuration reloaded without the key: the open connection may no longer write.
        assert!(!KeyStore::from_config(&[]).unwrap().may_write(&principal, "app"));
        // ... and with the key configured anew (another secret) neither.
        assert!(!keys(&["demo/app"]).may_write(&principal, "app"));
    }
}
