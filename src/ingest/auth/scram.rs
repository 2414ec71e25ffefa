//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka
//! speaks them (KIP-84): no channel binding (`n,,`), no extensions, and the salted
//! password never stored, only the stored key and server key derived from it.
//!
//! The exchange is two client messages, each answered by one server message:
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt b64>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<proof b64>
//! server-final  v=<server signature b64>        (or e=<error>)
//! ```
//!
//! Each state is a type: [`ServerStart`] takes the client-first message and gives
//! [`ClientFirst`]; with the user's credential that answers the server-first message and
//! becomes [`ServerFirstSent`], which checks the client-final message. Parsing never
//! panics on input and every message is bounded by [`MAX_MESSAGE`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Longest SCRAM message accepted (the Kafka frame limit before authentication is larger).
pub const MAX_MESSAGE: usize = 4096;
/// Fewest PBKDF2 iterations (what Kafka requires of SCRAM credentials).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations (Kafka's limit too; every Kafka client accepts up to this).
pub const MAX_ITERATIONS: u32 = 16384;
/// Bytes of random salt `loggate keygen` gives a credential.
pub const SALT_LEN: usize = 24;
/// Random bytes of the server's part of the nonce.
const SERVER_NONCE_LEN: usize = 24;

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name, exactly as Kafka spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The access key's configuration field holding this mechanism's credential.
    pub fn config_field(self) -> &'static str {
        match self {
            Self::Sha256 => "scram_sha256",
            Self::Sha512 => "scram_sha512",
        }
    }

    /// Output length of the hash (and of keys, proofs and signatures).
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length: new_from_slice cannot fail.
        match self {
            Self::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Self::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_len()];
        match self {
            Self::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
            Self::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
        }
        out
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server stores of a SCRAM password: `<iterations>:<salt>:<stored key>:<server
/// key>` (base64). The salted password and the client key cannot be recovered from it.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    mechanism: Mechanism,
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramCredential({}, i={}, ..)", self.mechanism, self.iterations)
    }
}

/// Why a stored SCRAM credential does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("must look like <iterations>:<salt base64>:<stored key base64>:<server key base64>")]
    Format,
    #[error("iterations must be a number from {MIN_ITERATIONS} to {MAX_ITERATIONS}")]
    Iterations,
    #[error("{0} is not base64")]
    Base64(&'static str),
    #[error("{0} must be {1} bytes")]
    Length(&'static str, usize),
    #[error("salt must be 1 to 256 bytes")]
    SaltLength,
}

impl ScramCredential {
    /// Derives the credential of `password` with `salt` (RFC 5802 section 3).
    pub fn derive(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let server_key = mechanism.hmac(&salted, b"Server Key");
        Self { mechanism, iterations, salt: salt.to_vec(), stored_key, server_key }
    }

    /// Derives the credential of `password` with a fresh random salt.
    pub fn generate(mechanism: Mechanism, password: &str, iterations: u32) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::derive(mechanism, password, &salt, iterations)
    }

    /// Parses the stored form.
    pub fn parse(mechanism: Mechanism, text: &str) -> Result<Self, CredentialError> {
        let mut parts = text.split(':');
        let (Some(iterations), Some(salt), Some(stored), Some(server), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CredentialError::Format);
        };
        let iterations: u32 = iterations.parse().map_err(|_| CredentialError::Iterations)?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(CredentialError::Iterations);
        }
        let salt = B64.decode(salt).map_err(|_| CredentialError::Base64("salt"))?;
        if salt.is_empty() || salt.len() > 256 {
            return Err(CredentialError::SaltLength);
        }
        let stored_key = B64.decode(stored).map_err(|_| CredentialError::Base64("stored key"))?;
        let server_key = B64.decode(server).map_err(|_| CredentialError::Base64("server key"))?;
        if stored_key.len() != mechanism.digest_len() {
            return Err(CredentialError::Length("stored key", mechanism.digest_len()));
        }
        if server_key.len() != mechanism.digest_len() {
            return Err(CredentialError::Length("server key", mechanism.digest_len()));
        }
        Ok(Self { mechanism, iterations, salt, stored_key, server_key })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// A digest that changes whenever the credential does (what a login remembers, so
    /// that replacing the credential revokes the connections that logged in with it).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.mechanism.name().as_bytes());
        h.update(b":");
        h.update(&self.stored_key);
        h.update(&self.server_key);
        h.finalize().into()
    }

    /// A credential that no password matches, stable for `seed` (a per-process secret and
    /// the username): an unknown user is answered like a known one with the same work.
    pub fn fake(mechanism: Mechanism, seed: &[u8]) -> Self {
        let salt = Mechanism::Sha256.hmac(seed, b"salt")[..SALT_LEN].to_vec();
        let stored_key = mechanism.hmac(seed, b"stored");
        let server_key = mechanism.hmac(seed, b"server");
        Self { mechanism, iterations: MIN_ITERATIONS, salt, stored_key, server_key }
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

/// Why a SCRAM exchange failed on the protocol level. [`ScramError::server_error`] is
/// the RFC 5802 `e=` value the server-final message carries, where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("SCRAM message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("SCRAM message is not UTF-8")]
    NotUtf8,
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding requested (only n,, is supported)")]
    ChannelBinding,
    #[error("SCRAM extensions are not supported")]
    Extensions,
    #[error("username is not valid SCRAM saslname encoding")]
    UsernameEncoding,
    #[error("authorization id differs from the username")]
    AuthzidMismatch,
    #[error("channel binding data differs from the client-first message's")]
    ChannelBindingMismatch,
    #[error("nonce differs from the one the server sent")]
    NonceMismatch,
    #[error("client proof is malformed")]
    ProofFormat,
    #[error("client proof does not match")]
    InvalidProof,
}

impl ScramError {
    /// The `e=` server-error of RFC 5802 for failures detected in the client-final
    /// message (None for failures of the client-first message, which has no answer).
    pub fn server_error(self) -> Option<&'static str> {
        match self {
            Self::ChannelBindingMismatch => Some("channel-bindings-dont-match"),
            Self::NonceMismatch | Self::ProofFormat | Self::InvalidProof => Some("invalid-proof"),
            Self::Extensions => Some("extensions-not-supported"),
            Self::TooLong | Self::NotUtf8 | Self::Malformed(_) => Some("invalid-encoding"),
            Self::ChannelBinding | Self::UsernameEncoding | Self::AuthzidMismatch => None,
        }
    }
}

/// Awaiting the client-first message of `mechanism`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStart {
    pub mechanism: Mechanism,
}

/// A parsed client-first message: who the client says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    mechanism: Mechanism,
    /// `n,,` or `n,a=<authzid>,`: what `c=` of the client-final message must carry.
    gs2_header: String,
    /// The message after the GS2 header (part of the auth message).
    bare: String,
    /// The username, saslname escapes decoded.
    pub username: String,
    client_nonce: String,
}

/// The server-first message was sent: awaiting client-final.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerFirstSent {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
}

impl fmt::Debug for ServerFirstSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFirstSent").field("mechanism", &self.first.mechanism).finish_non_exhaustive()
    }
}

fn text(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE {
        return Err(ScramError::TooLong);
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::NotUtf8)
}

/// A nonce: printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes a saslname (`=2C` is `,`, `=3D` is `=`, no other `=`).
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::UsernameEncoding),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::UsernameEncoding);
    }
    Ok(out)
}

impl ServerStart {
    pub fn new(mechanism: Mechanism) -> Self {
        Self { mechanism }
    }

    /// Parses the client-first message: `n,[a=<authzid>],n=<user>,r=<nonce>`.
    pub fn client_first(self, msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = text(msg)?;
        let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" => {}
            "y" => return Err(ScramError::ChannelBinding),
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("GS2 channel binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = &msg[..flag.len() + 1 + authzid.len() + 1];
        let authzid = match authzid {
            "" => None,
            a => Some(decode_saslname(a.strip_prefix("a=").ok_or(ScramError::Malformed("GS2 authzid"))?)?),
        };
        let mut attrs = bare.split(',');
        let user = match attrs.next() {
            Some(m) if m.starts_with("m=") => return Err(ScramError::Extensions),
            Some(u) => u.strip_prefix("n=").ok_or(ScramError::Malformed("no username"))?,
            None => return Err(ScramError::Malformed("no username")),
        };
        let nonce = attrs.next().and_then(|r| r.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        if attrs.next().is_some() {
            // Kafka's only extension is tokenauth (delegation tokens), which loggate has not.
            return Err(ScramError::Extensions);
        }
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("nonce"));
        }
        let username = decode_saslname(user)?;
        if authzid.is_some_and(|a| a != username) {
            return Err(ScramError::AuthzidMismatch);
        }
        Ok(ClientFirst {
            mechanism: self.mechanism,
            gs2_header: gs2_header.to_string(),
            bare: bare.to_string(),
            username,
            client_nonce: nonce.to_string(),
        })
    }
}

impl ClientFirst {
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Answers with the server-first message for `credential` (the user's, or a fake one
    /// for an unknown user), with a fresh random server nonce.
    pub fn server_first(self, credential: ScramCredential) -> (ServerFirstSent, Vec<u8>) {
        let mut random = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut random);
        self.server_first_with_nonce(credential, &B64.encode(random))
    }

    fn server_first_with_nonce(self, credential: ScramCredential, server_nonce: &str) -> (ServerFirstSent, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
        let bytes = server_first.clone().into_bytes();
        (ServerFirstSent { first: self, server_first, nonce, credential }, bytes)
    }
}

impl ServerFirstSent {
    /// Checks the client-final message `c=<gs2 header b64>,r=<nonce>,p=<proof b64>` and
    /// returns the server-final message (`v=<server signature>`) when the proof holds.
    pub fn client_final(self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = text(msg)?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding =
            attrs.next().and_then(|c| c.strip_prefix("c=")).ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attrs.next().and_then(|r| r.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        // Further attributes are extensions; they are part of the auth message, and ignored.
        let binding = B64.decode(binding).map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if !bool::from(nonce.as_bytes().ct_eq(self.nonce.as_bytes())) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::ProofFormat)?;
        let mechanism = self.credential.mechanism;
        if proof.len() != mechanism.digest_len() {
            return Err(ScramError::ProofFormat);
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let client_signature = mechanism.hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let server_signature = mechanism.hmac(&self.credential.server_key, auth_message.as_bytes());
        if !bool::from(mechanism.hash(&client_key).ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    pub fn mechanism(&self) -> Mechanism {
        self.first.mechanism
    }

    /// The username the client-first message named.
    pub fn username(&self) -> &str {
        &self.first.username
    }
}

/// The server-final message reporting `error` (`e=<server-error>`), if it has one.
pub fn server_final_error(error: ScramError) -> Option<Vec<u8>> {
    error.server_error().map(|e| format!("e={e}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client written from RFC 5802 section 3 independently of the server code
    /// above (it shares only the HMAC/hash primitives of the crates).
    struct Client {
        mechanism: Mechanism,
        password: &'static str,
        bare: String,
        nonce: String,
    }

    impl Client {
        fn new(mechanism: Mechanism, user: &str, password: &'static str, nonce: &str) -> (Self, Vec<u8>) {
            let bare = format!("n={user},r={nonce}");
            let first = format!("n,,{bare}").into_bytes();
            (Self { mechanism, password, bare, nonce: nonce.into() }, first)
        }

        /// Returns the client-final message and the server signature it expects.
        fn final_message(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let sf = std::str::from_utf8(server_first).unwrap();
            let mut r = "";
            let mut s = "";
            let mut i = 0u32;
            for attr in sf.split(',') {
                match attr.split_at(2) {
                    ("r=", v) => r = v,
                    ("s=", v) => s = v,
                    ("i=", v) => i = v.parse().unwrap(),
                    _ => panic!("unexpected {attr}"),
                }
            }
            assert!(r.starts_with(&self.nonce));
            let m = self.mechanism;
            let salted = m.salted_password(self.password.as_bytes(), &B64.decode(s).unwrap(), i);
            let client_key = m.hmac(&salted, b"Client Key");
            let stored = m.hash(&client_key);
            let without_proof = format!("c=biws,r={r}");
            let auth = format!("{},{sf},{without_proof}", self.bare);
            let sig = m.hmac(&stored, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
            let server_sig = m.hmac(&m.hmac(&salted, b"Server Key"), auth.as_bytes());
            (format!("{without_proof},p={}", B64.encode(proof)).into_bytes(), server_sig)
        }
    }

    fn exchange(m: Mechanism, cred: &ScramCredential, password: &'static str) -> Result<(), ScramError> {
        let (client, first) = Client::new(m, "demo#AK1", password, "fyko+d2lbbFgONRv9qkxdawL");
        let cf = ServerStart::new(m).client_first(&first)?;
        assert_eq!(cf.username, "demo#AK1");
        let (state, server_first) = cf.server_first(cred.clone());
        let (final_msg, expected) = client.final_message(&server_first);
        let server_final = state.client_final(&final_msg)?;
        assert_eq!(server_final, format!("v={}", B64.encode(expected)).into_bytes());
        Ok(())
    }

    #[test]
    fn both_mechanisms_log_in_with_the_right_password_only() {
        for m in Mechanism::ALL {
            let cred = ScramCredential::generate(m, "AK1#secret", 4096);
            assert_eq!(exchange(m, &cred, "AK1#secret"), Ok(()));
            assert_eq!(exchange(m, &cred, "AK1#wrong"), Err(ScramError::InvalidProof));
            let fake = ScramCredential::fake(m, b"seed");
            assert_eq!(exchange(m, &fake, "AK1#secret"), Err(ScramError::InvalidProof));
        }
    }

    #[test]
    fn derivation_matches_a_second_implementation() {
        // Computed with Python's hashlib.pbkdf2_hmac and hmac (RFC 5802 section 3) for
        // password "AK1#pencil", salt "loggate-salt", 4096 iterations.
        let salt = B64.encode(b"loggate-salt");
        let cases = [
            (
                Mechanism::Sha256,
                "BwwX1g9d/a9Dsd/BUydYCVpwQjNF5URmB0NXjMsVqu0=",
                "uetH5D7MGm/EzAGPJlI8Qf/KNp2pwPTgsFEpi0BoOPk=",
            ),
            (
                Mechanism::Sha512,
                "Jgg6urJclT73ZMmt+gP5jQk5FjIwe75JvOZ2lkhfyd9uotk6LRYp0OT4cwVdUeS4c3FD8gzBg65AkRqioA6WNQ==",
                "EBJEy/YsZZR+/z/wlrLirwuLFz82IwpP32hPmQwhEQJRbs72XKdnUFCfQWMitypkSEkXvc+pyYAUOc7weDeTqw==",
            ),
        ];
        for (m, stored, server) in cases {
            let cred = ScramCredential::derive(m, "AK1#pencil", b"loggate-salt", 4096);
            assert_eq!(cred.to_string(), format!("4096:{salt}:{stored}:{server}"));
        }
    }

    #[test]
    fn stored_form_round_trips_and_never_shows_keys_in_debug() {
        for m in Mechanism::ALL {
            let cred = ScramCredential::generate(m, "pw", 5000);
            let text = cred.to_string();
            assert!(text.starts_with("5000:"));
            assert_eq!(ScramCredential::parse(m, &text), Ok(cred.clone()));
            assert!(!format!("{cred:?}").contains(&B64.encode(&cred.stored_key)));
            let other = Mechanism::ALL.into_iter().find(|o| *o != m).unwrap();
            assert!(matches!(ScramCredential::parse(other, &text), Err(CredentialError::Length(..))));
        }
        let m = Mechanism::Sha256;
        assert_eq!(ScramCredential::parse(m, "4096:abc"), Err(CredentialError::Format));
        assert_eq!(ScramCredential::parse(m, "100:AA==:AA==:AA=="), Err(CredentialError::Iterations));
        assert_eq!(ScramCredential::parse(m, "4096:!!:AA==:AA=="), Err(CredentialError::Base64("salt")));
    }

    #[test]
    fn fake_credentials_are_stable_per_seed() {
        let a = ScramCredential::fake(Mechanism::Sha512, b"k1");
        assert_eq!(a, ScramCredential::fake(Mechanism::Sha512, b"k1"));
        assert_ne!(a.salt, ScramCredential::fake(Mechanism::Sha512, b"k2").salt);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.stored_key.len(), 64);
    }

    #[test]
    fn client_first_parsing() {
        let p = |m: &str| ServerStart::new(Mechanism::Sha256).client_first(m.as_bytes()).map(|c| c.username);
        assert_eq!(p("n,,n=demo#AK1,r=abc").as_deref(), Ok("demo#AK1"));
        assert_eq!(p("n,,n=a=2Cb=3Dc,r=abc").as_deref(), Ok("a,b=c"));
        assert_eq!(p("n,a=u,n=u,r=abc").as_deref(), Ok("u"));
        assert_eq!(p("n,a=x,n=u,r=abc"), Err(ScramError::AuthzidMismatch));
        assert_eq!(p("p=tls-unique,,n=u,r=abc"), Err(ScramError::ChannelBinding));
        assert_eq!(p("y,,n=u,r=abc"), Err(ScramError::ChannelBinding));
        assert_eq!(p("n,,m=x,n=u,r=abc"), Err(ScramError::Extensions));
        assert_eq!(p("n,,n=u,r=abc,tokenauth=true"), Err(ScramError::Extensions));
        assert_eq!(p("n,,n=a=2Xb,r=abc"), Err(ScramError::UsernameEncoding));
        assert_eq!(p("n,,n=,r=abc"), Err(ScramError::UsernameEncoding));
        assert_eq!(p("n,,n=u,r="), Err(ScramError::Malformed("nonce")));
        assert_eq!(p("n,,n=u,r=a\u{7f}"), Err(ScramError::Malformed("nonce")));
        assert_eq!(p("n,,n=u"), Err(ScramError::Malformed("no nonce")));
        assert_eq!(p("n,,r=abc"), Err(ScramError::Malformed("no username")));
        assert_eq!(p("n"), Err(ScramError::Malformed("no GS2 header")));
        assert_eq!(p("n,"), Err(ScramError::Malformed("no GS2 header")));
        assert_eq!(p("x,,n=u,r=abc"), Err(ScramError::Malformed("GS2 channel binding flag")));
        assert_eq!(p(""), Err(ScramError::Malformed("no GS2 header")));
        assert_eq!(p(&format!("n,,n=u,r={}", "a".repeat(MAX_MESSAGE))), Err(ScramError::TooLong));
        assert_eq!(ServerStart::new(Mechanism::Sha256).client_first(b"n,,n=\xff,r=a"), Err(ScramError::NotUtf8));
        // Multi-byte characters next to '=' never split a character.
        assert_eq!(p("n,,n=\u{e9}=\u{e9}\u{e9},r=abc"), Err(ScramError::UsernameEncoding));
    }

    #[test]
    fn client_final_checks_binding_nonce_and_proof() {
        let m = Mechanism::Sha256;
        let cred = ScramCredential::generate(m, "pw", 4096);
        let start = || {
            let cf = ServerStart::new(m).client_first(b"n,,n=u,r=cn").unwrap();
            cf.server_first_with_nonce(cred.clone(), "SN").0
        };
        let good = {
            let (client, _) = Client::new(m, "u", "pw", "cn");
            let (_, server_first) =
                ServerStart::new(m).client_first(b"n,,n=u,r=cn").unwrap().server_first_with_nonce(cred.clone(), "SN");
            client.final_message(&server_first).0
        };
        let good = String::from_utf8(good).unwrap();
        assert!(start().client_final(good.as_bytes()).is_ok());
        let proof = good.rsplit_once(",p=").unwrap().1.to_string();
        let f = |msg: String| start().client_final(msg.as_bytes());
        assert_eq!(f(format!("c=eSws,r=cnSN,p={proof}")), Err(ScramError::ChannelBindingMismatch));
        assert_eq!(f(format!("c=biws,r=cnXX,p={proof}")), Err(ScramError::NonceMismatch));
        assert_eq!(f(format!("c=biws,r=cn,p={proof}")), Err(ScramError::NonceMismatch));
        assert_eq!(f("c=biws,r=cnSN,p=AAAA".into()), Err(ScramError::ProofFormat));
        assert_eq!(f("c=biws,r=cnSN,p=!!".into()), Err(ScramError::ProofFormat));
        assert_eq!(f(format!("c=biws,r=cnSN,p={}", B64.encode([0u8; 32]))), Err(ScramError::InvalidProof));
        assert_eq!(f("c=biws,r=cnSN".into()), Err(ScramError::Malformed("no proof")));
        assert_eq!(f(format!("r=cnSN,p={proof}")), Err(ScramError::Malformed("no channel binding")));
        assert_eq!(f(format!("c=biws,p={proof}")), Err(ScramError::Malformed("no nonce")));
        assert_eq!(f(format!("c=***,r=cnSN,p={proof}")), Err(ScramError::Malformed("channel binding is not base64")));
        assert_eq!(server_final_error(ScramError::InvalidProof).as_deref(), Some(&b"e=invalid-proof"[..]));
        assert_eq!(server_final_error(ScramError::ChannelBinding), None);
    }
}
