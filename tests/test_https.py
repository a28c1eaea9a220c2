"""HTTPS in the production profile: `mnist-kit serve` with a certificate and key, `mnist-kit predict --cacert`.

The certificate is self-signed, made here for 127.0.0.1; the server is a real TorchServe started by `mnist-kit serve`.
"""

import datetime
import ipaddress

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mnist_kit.cli import cli
from mnist_kit.serving.processes import free_port
from mnist_kit.serving.torchserve import config


def pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed(folder, name: str = "tls") -> tuple:
    """An RSA key and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in `folder`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(pem_key(key))
    return cert_path, key_path


def production_config(folder, store, port, **tls) -> str:
    path = folder / "config.production.properties"
    path.write_text(
        config.properties(
            "production",
            inference_port=port,
            management_port=free_port(),
            metrics_port=free_port(),
            grpc_ports=(free_port(), free_port()),
            model_store=store,
            initial_worker_port=free_port(),
            **tls,
        )
    )
    return str(path)


def kit(home, *args):
    env = {"MNIST_KIT_HOME": str(home), "TMPDIR": str(home / "tmp"), "TEMP": str(home / "tmp")}
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def https_server(model_store, tmp_path_factory):
    """`mnist-kit serve` of the production profile with a self-signed certificate; stopped with `mnist-kit stop`."""
    home = tmp_path_factory.mktemp("https")
    (home / "tmp").mkdir()
    certificate, key = self_signed(home)
    port = free_port()
    config_path = production_config(home, model_store, port, certificate=certificate, private_key=key)
    try:
        started = kit(home, "serve", "--ts-config", config_path)
        assert started.exit_code == 0, started.output
        yield {"home": home, "port": port, "certificate": certificate, "started": started.output}
    finally:
        kit(home, "stop")


def test_serve_starts_the_production_profile_on_https(https_server):
    assert f"TorchServe ready: inference https://0.0.0.0:{https_server['port']}" in https_server["started"]


def test_predict_with_cacert_verifies_the_server_and_reads_the_digit(https_server, digits):
    url = f"https://127.0.0.1:{https_server['port']}"
    result = kit(https_server["home"], "predict", "--url", url, "--cacert", https_server["certificate"], digits[7])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{digits[7]}: 7 (")


def test_predict_without_the_certificate_says_it_is_not_trusted(https_server, digits):
    result = kit(https_server["home"], "predict", "--url", f"https://127.0.0.1:{https_server['port']}", digits[7])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the server's certificate is not trusted" in result.output and "--cacert" in result.output


def test_plain_http_to_the_tls_port_fails_clearly(https_server, digits):
    result = kit(https_server["home"], "predict", "--url", f"http://127.0.0.1:{https_server['port']}", digits[7])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "This TorchServe instance only accepts HTTPS requests" in result.output
    assert "use an https:// URL" in result.output


# What serve refuses before starting anything


@pytest.fixture
def store(tmp_path):
    """A model store that passes serve's archive check; the TLS checks come after it."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mnist.mar").write_bytes(b"")
    (tmp_path / "tmp").mkdir()
    return tmp_path / "store"


def test_serve_refuses_a_key_that_is_not_the_certificates(tmp_path, store):
    certificate, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    config_path = production_config(tmp_path, store, free_port(), certificate=certificate, private_key=other_key)
    result = kit(tmp_path, "serve", "--ts-config", config_path)
    assert result.exit_code == 1 and "are not a PEM certificate and its own key" in result.output


def test_serve_refuses_a_key_torchserve_cannot_read(tmp_path, store):
    certificate, key = self_signed(tmp_path)
    key.write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    config_path = production_config(tmp_path, store, free_port(), certificate=certificate, private_key=key)
    result = kit(tmp_path, "serve", "--ts-config", config_path)
    assert result.exit_code == 1 and "is not an unencrypted RSA key in PEM" in result.output


def test_serve_refuses_an_https_address_without_a_certificate(tmp_path, store):
    config_path = tmp_path / "https.properties"
    text = config.properties("production", inference_port=free_port(), model_store=store)
    config_path.write_text(text.replace("inference_address=http://", "inference_address=https://"))
    result = kit(tmp_path, "serve", "--ts-config", config_path)
    assert result.exit_code == 1 and "no certificate_file and private_key_file are set" in result.output


def test_serve_refuses_a_certificate_on_a_plain_http_address(tmp_path, store):
    certificate, key = self_signed(tmp_path)
    config_path = tmp_path / "http.properties"
    text = production_config(tmp_path, store, free_port(), certificate=certificate, private_key=key)
    config_path.write_text(open(text).read().replace("inference_address=https://", "inference_address=http://"))
    result = kit(tmp_path, "serve", "--ts-config", config_path)
    assert result.exit_code == 1 and "TorchServe would serve plain HTTP" in result.output
