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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server endpoint of `cert`'s node on a free loopback port: it
    /// answers "ok" on every stream of a connection that got in.
    fn server(cert: &NodeCertificate) -> quinn::Endpoint {
        let (server, _) = quic_configs(cert).expect("configs");
        let ep =
            quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr")).expect("bind");
        let accept = ep.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let _ = recv.read_to_end(64).await;
                        let _ = send.write_all(b"ok").await;
                        let _ = send.finish();
                    }
                });
            }
        });
        ep
    }

    /// Connects and asks on one stream: "ok" means the server let us in.
    /// With TLS 1.3 the server checks the client's certificate after the
    /// client considers the handshake done, so a refused client learns it
    /// when its stream fails.
    async fn ask(
        client: quinn::ClientConfig,
        to: &quinn::Endpoint,
        name: &str,
    ) -> Result<(), String> {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
        ep.set_default_client_config(client);
        let addr = to.local_addr().expect("addr");
        let conn = ep
            .connect(addr, name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"x").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let answer = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
        if answer == b"ok" {
            Ok(())
        } else {
            Err(format!("unexpected answer {answer:?}"))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_peers_with_a_certificate_from_the_cluster_ca_get_in() {
        let ca = ClusterCa::generate().expect("CA");
        let n1 = ca.issue("n1").expect("n1");
        let ep = server(&n1);

        // A node of the same CA gets in.
        let (_, good) = quic_configs(&ca.issue("n2").expect("n2")).expect("configs");
        ask(good, &ep, "n1")
            .await
            .expect("a CA-signed peer gets in");

        // A node of another CA is refused.
        let other = ClusterCa::generate().expect("other CA");
        let mut stranger = other.issue("n2").expect("cert");
        stranger.ca_pem = ca.cert_pem.clone(); // it even trusts our CA
        let (_, bad) = quic_configs(&stranger).expect("configs");
        ask(bad, &ep, "n1")
            .await
            .expect_err("a foreign peer is refused");

        // A client with no certificate at all is refused.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&ca.cert_pem, "CA").expect("CA") {
            roots.add(c).expect("root");
        }
        let mut anon = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        anon.alpn_protocols = vec![ALPN.to_vec()];
        let anon = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(anon).expect("quic"),
        ));
        ask(anon, &ep, "n1")
            .await
            .expect_err("a peer without a certificate is refused");

        // And the server must be who we dialled: n1's certificate does not
        // pass for n3.
        let (_, good) = quic_configs(&ca.issue("n2").expect("n2")).expect("configs");
        ask(good, &ep, "n3")
            .await
            .expect_err("the server's name is checked");
    }

    #[test]
    fn bad_node_ids_and_pem_are_errors() {
        let ca = ClusterCa::generate().expect("CA");
        assert!(matches!(ca.issue("Bad_Name"), Err(ClusterError::Config(_))));
        let broken = NodeCertificate {
            cert_pem: "not pem".into(),
            key_pem: "not pem".into(),
            ca_pem: ca.cert_pem.clone(),
        };
        assert!(matches!(quic_configs(&broken), Err(ClusterError::Tls(_))));
    }
}
