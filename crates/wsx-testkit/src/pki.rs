//! [`Pki`]: certificates for TLS tests, made fresh by rcgen.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA of the test's own and a leaf certificate it signed, all as PEM: the server presents
/// `cert_pem` with `key_pem`, and a client that trusts `ca_pem` accepts it for the names it was
/// made for (and refuses it without that CA, which no system trusts).
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA's certificate: what a client adds to its roots.
    pub ca_pem: String,
    /// The leaf certificate, signed by the CA.
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl Pki {
    /// A new CA and a leaf certificate for `names` (DNS names or IP addresses, such as
    /// `"localhost"` and `"127.0.0.1"`), with fresh keys. Panics if rcgen fails, which it does
    /// only for a name it cannot encode.
    pub fn new(names: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let names = names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        let leaf = CertificateParams::new(names).expect("leaf parameters").signed_by(&leaf_key, &issuer).expect("leaf");
        Self { ca_pem: ca_cert.pem(), cert_pem: leaf.pem(), key_pem: leaf_key.serialize_pem() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_is_signed_by_the_ca() {
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(pki.ca_pem, pki.cert_pem);
    }
}
