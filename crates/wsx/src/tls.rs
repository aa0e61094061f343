//! TLS through rustls: what a client trusts ([`TlsConfig`]) and a server's certificate
//! ([`ServerTls`]).
//!
//! Clients verify the server's certificate chain and host name by default, against the Mozilla
//! roots of `webpki-roots`. A server loads its certificate chain and key from PEM once, then
//! wraps each accepted socket:
//!
//! ```no_run
//! # async fn run() -> wsx::Result<()> {
//! let tls = wsx::tls::ServerTls::from_pem_files("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let tls = tls.clone();
//!     tokio::spawn(async move {
//!         let Ok(stream) = tls.accept(tcp).await else { return };
//!         let Ok(mut ws) = wsx::accept(stream).await else { return };
//!         while let Ok(Some(message)) = ws.recv().await {
//!             let _ = ws.send(message).await;
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! The crypto provider is rustls's process default; if none is installed yet, the first use
//! installs aws-lc-rs (feature `rustls-aws-lc-rs`) or else ring (feature `rustls-ring`).

use std::{
    fmt,
    path::Path,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    error::{Error, Result},
    io::{Io, forward_io},
};

/// The ALPN protocol both sides announce: the opening handshake is HTTP/1.1 (RFC 6455 §4.1).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A TLS setup failure, kept as text so that a [`ClientBuilder`](crate::ClientBuilder) can hold
/// it until `connect` (an [`Error`] is not `Clone`).
type Setup<T> = std::result::Result<T, String>;

/// The process-default crypto provider, installing one chosen by feature if none is set.
fn provider() -> Setup<Arc<CryptoProvider>> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Ok(provider.clone());
    }
    #[cfg(feature = "rustls-aws-lc-rs")]
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    #[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc-rs")))]
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `install_default` fails only if another thread installed one meanwhile: use that one.
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        "no rustls crypto provider: enable the `rustls-ring` or `rustls-aws-lc-rs` feature, \
         or install one with `CryptoProvider::install_default`"
            .to_owned()
    })
}

/// Parse every certificate in `pem`; `what` names the source in errors.
fn certificates(pem: &[u8], what: &str) -> Setup<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificates (BEGIN CERTIFICATE) found in {what}"));
    }
    Ok(certs)
}

/// Read a whole PEM file, naming it in the error.
fn read_pem_file(path: &Path) -> Setup<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What a client trusts when it connects with TLS (`wss://`).
///
/// [`new`](Self::new) (the default for [`ClientBuilder`](crate::ClientBuilder)) verifies the
/// server's certificate chain against the `webpki-roots` Mozilla roots, and that it is valid for
/// the URL's host. Cheap to clone: the rustls config is shared.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl TlsConfig {
    /// Trust the Mozilla roots of `webpki-roots`.
    ///
    /// Built once per process and shared. Fails only if no crypto provider is available.
    pub fn new() -> Result<Self> {
        Self::webpki().map_err(Error::tls)
    }

    /// Trust only the certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks), instead
    /// of the built-in roots: for a private CA or a self-signed server.
    ///
    /// Fails with an error where [`Error::is_tls`] holds if `pem` holds no certificate or one
    /// that cannot be a trust anchor.
    pub fn with_root_certificates_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        Self::roots_from_pem(pem.as_ref(), "the root certificates").map_err(Error::tls)
    }

    /// [`with_root_certificates_pem`](Self::with_root_certificates_pem), reading the PEM from
    /// the file at `path`.
    pub fn with_root_certificates_pem_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::roots_from_pem_file(path.as_ref()).map_err(Error::tls)
    }

    /// Accept any certificate for any host name: **the connection is encrypted but not
    /// authenticated**, so anyone on the path can read and change it.
    ///
    /// Only for testing against a server whose certificate you cannot install (a CLI's
    /// `--insecure`). The server must still prove it holds the key of the certificate it
    /// presents, which is all that is left of TLS's protection.
    pub fn danger_accept_invalid_certs() -> Result<Self> {
        Self::accept_any().map_err(Error::tls)
    }

    /// Use a rustls client config as it is (client certificates, a custom verifier, …).
    ///
    /// Set its `alpn_protocols` to `http/1.1` or leave them empty: the handshake is HTTP/1.1.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    /// The rustls config in use.
    pub fn rustls_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    pub(crate) fn webpki() -> Setup<Self> {
        static WEBPKI: OnceLock<TlsConfig> = OnceLock::new();
        if let Some(config) = WEBPKI.get() {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = Self::with_roots(roots)?;
        Ok(WEBPKI.get_or_init(|| config).clone())
    }

    pub(crate) fn roots_from_pem(pem: &[u8], what: &str) -> Setup<Self> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(pem, what)? {
            roots.add(cert).map_err(|e| format!("unusable root certificate in {what}: {e}"))?;
        }
        Self::with_roots(roots)
    }

    pub(crate) fn roots_from_pem_file(path: &Path) -> Setup<Self> {
        Self::roots_from_pem(&read_pem_file(path)?, &path.display().to_string())
    }

    pub(crate) fn accept_any() -> Setup<Self> {
        let provider = provider()?;
        let verifier = AcceptAnyCert { provider: provider.clone() };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self::from_config(config))
    }

    fn with_roots(roots: RootCertStore) -> Setup<Self> {
        let config = ClientConfig::builder_with_provider(provider()?)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_config(config))
    }

    fn from_config(mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Self { config: Arc::new(config) }
    }

    /// Run the TLS handshake over `io` for the server `host`, checking its certificate.
    ///
    /// `host` is the URL's host: a DNS name, or an IP literal (IPv6 without brackets), which is
    /// then checked against the certificate's IP addresses and not sent as SNI.
    #[cfg(feature = "client")]
    pub(crate) async fn connect<S>(&self, host: &str, io: S) -> Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned())
                .map_err(|e| Error::tls(format!("cannot use {host:?} as a TLS server name: {e}")))?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Ok(connector.connect(name, io).await?)
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Accepts every certificate but still checks the handshake signatures, so the server must
/// hold the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A server's TLS identity: its certificate chain and private key, ready to
/// [`accept`](Self::accept) connections.
///
/// Load it once at startup and clone it into each connection's task (the config is shared).
/// It announces ALPN `http/1.1` and asks for no client certificate.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl ServerTls {
    /// Load the certificate chain (leaf first, then intermediates) and the private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files.
    ///
    /// Fails with an error where [`Error::is_tls`] holds, saying which file and why, if a file
    /// cannot be read, holds no certificate or key, or the key does not match the certificate.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let load = || {
            let certs = certificates(&read_pem_file(cert_path)?, &cert_path.display().to_string())?;
            let key = private_key(&read_pem_file(key_path)?, &key_path.display().to_string())?;
            Self::from_parts(certs, key)
        };
        load().map_err(Error::tls)
    }

    /// [`from_pem_files`](Self::from_pem_files) from PEM bytes already in memory.
    pub fn from_pem(cert_chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Self> {
        let load = || {
            let certs = certificates(cert_chain.as_ref(), "the certificate chain")?;
            let key = private_key(key.as_ref(), "the private key")?;
            Self::from_parts(certs, key)
        };
        load().map_err(Error::tls)
    }

    /// Use a rustls server config as it is (client authentication, SNI resolution, …).
    ///
    /// Include `http/1.1` in its `alpn_protocols` if it offers any.
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        Self { acceptor: tokio_rustls::TlsAcceptor::from(config) }
    }

    /// The rustls config in use.
    pub fn rustls_config(&self) -> &Arc<ServerConfig> {
        self.acceptor.config()
    }

    /// Run the TLS handshake on an accepted connection; then pass the stream to
    /// [`accept`](crate::accept).
    ///
    /// Has no timeout of its own: a client that connects and says nothing holds the task, so
    /// bound it with [`tokio::time::timeout`]. Fails with an I/O error where
    /// [`Error::is_tls`] holds if the client's hello is not TLS or the handshake fails.
    pub async fn accept<S>(&self, io: S) -> Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let inner = self.acceptor.accept(io).await?;
        Ok(TlsStream { inner })
    }

    /// This identity announcing HTTP/2 (if `http2`) and HTTP/1.1 by ALPN, for an HTTP server;
    /// unchanged if its config lists protocols other than `http/1.1`.
    #[cfg(feature = "hyper")]
    pub(crate) fn with_http_alpn(&self, http2: bool) -> Self {
        let config = self.rustls_config();
        if !config.alpn_protocols.iter().all(|p| p.as_slice() == ALPN_HTTP11) {
            return self.clone();
        }
        let mut config = ServerConfig::clone(config);
        config.alpn_protocols =
            if http2 { vec![b"h2".to_vec(), ALPN_HTTP11.to_vec()] } else { vec![ALPN_HTTP11.to_vec()] };
        Self::from_rustls(Arc::new(config))
    }

    fn from_parts(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Setup<Self> {
        let mut config = ServerConfig::builder_with_provider(provider()?)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("cannot use the certificate and key: {e}"))?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self::from_rustls(Arc::new(config)))
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The first private key in `pem`; `what` names the source in errors.
fn private_key(pem: &[u8], what: &str) -> Setup<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no private key (BEGIN PRIVATE KEY, RSA or EC PRIVATE KEY) found in {what}")
        }
        e => format!("invalid PEM in {what}: {e}"),
    })
}

/// A server-side TLS connection, from [`ServerTls::accept`].
pub struct TlsStream<S> {
    inner: tokio_rustls::server::TlsStream<S>,
}

impl<S> TlsStream<S> {
    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref().0
    }

    /// The host name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.get_ref().1.server_name()
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream").field("server_name", &self.server_name()).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    fn io_mut(&mut self) -> &mut (dyn Io + '_) {
        &mut self.inner
    }

    fn io(&self) -> &(dyn Io + '_) {
        &self.inner
    }
}

forward_io!(TlsStream);
