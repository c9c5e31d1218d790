from __future__ import annotations

import pytest

from controlplane.ca import CABundle, CertificateAuthority, Identity
from controlplane.ca.root import create_root_bundle
from tests.support.pki import NOW


@pytest.fixture(scope="session")
def root_bundle() -> CABundle:
    return create_root_bundle(NOW)


@pytest.fixture
def ca(root_bundle: CABundle) -> CertificateAuthority:
    return CertificateAuthority(root_bundle, now=NOW)


@pytest.fixture
def reviews() -> Identity:
    return Identity("cluster.local", "default", "reviews")
