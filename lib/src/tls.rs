//! rustls client configuration with libpq's `sslmode` meanings.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and never
//! verifies anything itself: the rustls verifier built here decides what is
//! checked. As in libpq:
//!
//! | sslmode       | chain checked                   | host name checked |
//! |---------------|---------------------------------|-------------------|
//! | `disable`     | (no TLS)                        | no                |
//! | `prefer`      | no                              | no                |
//! | `require`     | only when `sslrootcert` is set  | no                |
//! | `verify-ca`   | yes                             | no                |
//! | `verify-full` | yes                             | yes               |
//!
//! Handshake signatures are always verified, so even `require` without a
//! root certificate gets an encrypted, tamper-evident session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{DatabaseSettings, SslMode};

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or holds no usable PEM.
    #[error("{key} = {path}: {reason}")]
    File {
        /// The configuration key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `verify-ca`/`verify-full` without a root certificate to verify against.
    #[error(
        "database.sslmode = {0} needs database.sslrootcert (the CA certificate that signed the server's certificate)"
    )]
    MissingRootCert(&'static str),
    /// Only one of `sslcert` and `sslkey` was given.
    #[error("database.sslcert and database.sslkey must be given together")]
    IncompleteClientCert,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every rustls configuration of ours uses.
///
/// Several crates of the dependency graph can enable a second rustls provider,
/// and rustls then refuses to choose one by itself; naming ours explicitly
/// (and installing it as the process default) avoids that trap.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Err only means another default was installed first; ours is still used
    // explicitly everywhere below.
    let _ = CryptoProvider::install_default(provider.as_ref().clone());
    provider
}

/// Builds the client configuration for `settings.sslmode`. With `disable`
/// tokio-postgres never uses it; one connector type for every mode keeps the
/// pool's type simple.
pub fn client_config(settings: &DatabaseSettings) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let roots = match &settings.sslrootcert {
        Some(path) => Some(load_roots(path)?),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.sslmode, roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(EncryptOnly(provider.signature_verification_algorithms))
        }
        (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )),
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?
        }
        (SslMode::VerifyCa, None) => return Err(TlsError::MissingRootCert("verify-ca")),
        (SslMode::VerifyFull, None) => return Err(TlsError::MissingRootCert("verify-full")),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.sslcert, &settings.sslkey) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs("database.sslcert", cert)?, load_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::IncompleteClientCert),
    };
    Ok(config)
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("database.sslrootcert", path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            key: "database.sslrootcert",
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The reason never includes key material: pem errors describe structure only.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key: "database.sslkey",
        path: path.to_owned(),
        reason: pem_reason(e),
    })
}

fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// `prefer`, and `require` without a root certificate: encrypt, verify the
/// handshake signature, trust any certificate (libpq does the same).
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the full WebPKI check, except that a certificate issued for
/// another host name is accepted. webpki checks the name only after the chain
/// has verified, so a name error implies a good chain.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
