//! The cluster's certificates: a CA made once at cluster creation (or
//! brought by the operator), and one certificate per node whose DNS name is
//! the node id. Both sides of every QUIC connection present a certificate
//! and check the other's against the CA (mutual TLS, TLS 1.3 only).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ClusterError;
use crate::remote::wire::ALPN;

fn tls(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{what}: {e}"))
}

/// A cluster's certificate authority, in PEM. Keep the key offline once
/// every node has its certificate.
#[derive(Clone)]
pub struct ClusterCa {
    /// The CA certificate every node trusts.
    pub cert_pem: String,
    /// The CA's private key, needed only to issue node certificates.
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// One node's certificate and key, and the CA it trusts, in PEM.
#[derive(Clone)]
pub struct NodeCertificate {
    /// The node's certificate (its DNS name is the node id).
    pub cert_pem: String,
    /// The node's private key.
    pub key_pem: String,
    /// The cluster CA's certificate.
    pub ca_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCertificate").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new CA (an ECDSA P-256 key, self-signed).
    ///
    /// # Errors
    ///
    /// Key generation or signing failed.
    pub fn generate() -> Result<ClusterCa, ClusterError> {
        let key = rcgen::KeyPair::generate().map_err(|e| tls("CA key", e))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| tls("CA certificate", e))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for node `node_id`.
    ///
    /// # Errors
    ///
    /// An invalid node id, a CA key or certificate that does not parse, or
    /// signing failed.
    pub fn issue(&self, node_id: &str) -> Result<NodeCertificate, ClusterError> {
        if !crate::remote::shard::valid_node_id(node_id) {
            return Err(ClusterError::Config(format!(
                "node id {node_id:?}: use 1 to 32 of a-z, 0-9 and -"
            )));
        }
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem).map_err(|e| tls("CA key", e))?;
        // The issuer's name and key usages are those `generate` gave the
        // CA, so they are rebuilt here instead of parsed from the PEM.
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let key = rcgen::KeyPair::generate().map_err(|e| tls("node key", e))?;
        let mut params = rcgen::CertificateParams::new(vec![node_id.to_string()])
            .map_err(|e| tls("node name", e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_id);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| tls("node certificate", e))?;
        Ok(NodeCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "objects cluster CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(what, e))?;
    if certs.is_empty() {
        return Err(tls(what, "no certificate in the PEM text"));
    }
    Ok(certs)
}

/// The QUIC server and client configurations of one node: both present
/// the node's certificate and accept only peers with one from the CA.
pub(crate) fn quic_configs(
    cert: &NodeCertificate,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), ClusterError> {
    // ring, the provider quinn's `rustls-ring` feature builds on (the
    // aws-lc-rs one needs cmake and a C toolchain at build time). Its
    // deprecation is about post-quantum key exchange, which nodes of one
    // cluster do not need to agree on with outsiders.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&cert.ca_pem, "CA certificate")? {
        roots.add(ca).map_err(|e| tls("CA certificate", e))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&cert.cert_pem, "node certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| tls("node key", e))?;

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls("client verifier", e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| tls("node certificate", e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls("TLS versions", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls("node certificate", e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| tls("QUIC server", e))?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| tls("QUIC client", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    let mut transport = quinn::TransportConfig::default();
    // Peers are found dead by the lease, not by QUIC; a short idle timeout
    // with keep-alives makes a lost peer's connection fail fast.
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(std::time::Duration::from_secs(10))
            .map_err(|e| tls("idle timeout", e))?,
    ));
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    let transport = Arc::new(transport);
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);
    Ok((server, client))
}
