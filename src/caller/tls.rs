//! The identity in a TLS client certificate: a SPIFFE ID in a URI subject
//! alternative name, or else the subject's common name.
//!
//! rustls has already checked the certificate chain against the configured
//! client CA by the time a request arrives. These functions only read
//! names and never decide trust.

use x509_cert::Certificate;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::oid::db::rfc4519::CN;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The names read from a client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// The first URI subject alternative name that starts with `spiffe://`.
    pub spiffe_id: Option<String>,
    /// The subject's first common name.
    pub common_name: Option<String>,
}

/// Reads the names of a DER certificate. A certificate that does not parse
/// yields no names, so the caller matches no rule.
pub fn certificate_names(der: &[u8]) -> CertificateNames {
    let Ok(certificate) = Certificate::from_der(der) else {
        return CertificateNames::default();
    };
    let tbs = &certificate.tbs_certificate;
    let spiffe_id = tbs
        .extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == SubjectAltName::OID)
        .filter_map(|extension| SubjectAltName::from_der(extension.extn_value.as_bytes()).ok())
        .flat_map(|names| names.0)
        .find_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri)
                if uri.as_str().starts_with("spiffe://") =>
            {
                Some(uri.as_str().to_owned())
            }
            _ => None,
        });
    let common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attribute| attribute.oid == CN)
        .find_map(|attribute| {
            let value = &attribute.value;
            let bytes = value.value();
            match value.tag() {
                Tag::Utf8String => Utf8StringRef::new(bytes)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                Tag::PrintableString => PrintableStringRef::new(bytes)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                Tag::Ia5String => Ia5StringRef::new(bytes).ok().map(|s| s.as_str().to_owned()),
                _ => None,
            }
        });
    CertificateNames {
        spiffe_id,
        common_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_yields_no_names() {
        assert_eq!(
            certificate_names(b"not a certificate"),
            CertificateNames::default()
        );
    }
}
