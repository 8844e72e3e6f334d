"""The names a client certificate gives its holder: what [tls] bind_certificate_to_id checks."""

from __future__ import annotations

from typing import Any, Optional


def peer_names(transport: Any) -> Optional[frozenset[str]]:
    """
    The subject common names and the DNS, URI and e-mail subject alternative
    names of the certificate the peer presented: an empty set over TLS
    without one, None when the transport is not TLS at all.
    """
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    certificate = get()
    if certificate is None:
        return frozenset()
    # Only TLS logins with binding on get here: cryptography is loaded already.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = certificate.to_cryptography()
    names = {str(attribute.value)
             for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name):
            names.update(alternative.get_values_for_type(kind))
    return frozenset(names)
