//! The CA files of the connections to the backends (`database.caFile`, `rabbitmq.caFile`,
//! `rateLimit.redisCaFile`): read and checked at start-up, so that a file that cannot be
//! read or holds no certificate stops start-up naming its key, and read again when a
//! process connects.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ConfigError;

/// The PEM text of the CA file at `path`: one certificate or more, each a valid trust
/// anchor. Errors name `key` and the path, never the file's contents.
pub(crate) fn read_ca_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bad = |reason: String| ConfigError::BadValue { key, reason };
    let pem = std::fs::read(path).map_err(|error| bad(format!("cannot read {}: {error}", path.display())))?;
    let mut anchors = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| bad(format!("{} is not a PEM file: {error}", path.display())))?;
        anchors
            .add(certificate)
            .map_err(|error| bad(format!("{} holds a certificate that is not valid: {error}", path.display())))?;
    }
    if anchors.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(pem)
}

/// Whether a URL's scheme is `scheme` (`amqps`, `rediss`), in any case.
pub(crate) fn has_scheme(url: &str, scheme: &str) -> bool {
    url.split_once("://").is_some_and(|(found, _)| found.eq_ignore_ascii_case(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_A_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_a_certificate_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = read_ca_file("database.caFile", &missing).unwrap_err().to_string();
        assert!(err.contains("database.caFile") && err.contains("cannot read"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = read_ca_file("rabbitmq.caFile", &empty).unwrap_err().to_string();
        assert!(err.contains("rabbitmq.caFile") && err.contains("no PEM certificate"), "{err}");

        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let err = read_ca_file("rateLimit.redisCaFile", &key_only).unwrap_err().to_string();
        assert!(err.contains("rateLimit.redisCaFile") && err.contains("no PEM certificate"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, NOT_A_CERTIFICATE).unwrap();
        let err = read_ca_file("database.caFile", &garbage).unwrap_err().to_string();
        assert!(err.contains("database.caFile") && err.contains("not valid"), "{err}");
    }

    #[test]
    fn schemes_are_compared_without_case() {
        assert!(has_scheme("amqps://mq:5671/%2f", "amqps"));
        assert!(has_scheme("AMQPS://mq", "amqps"));
        assert!(!has_scheme("amqp://mq", "amqps"));
        assert!(!has_scheme("rediss", "rediss"));
    }
}
