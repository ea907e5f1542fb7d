"""TLS everywhere (issue 11, part 2): the API over HTTPS, Consul over HTTPS with client
certificates (verify_incoming), https connectors verified with a CA. Certificates come
from `consul tls` (the `certificates` fixture); every client verifies them."""

import asyncio

import pytest
import requests

from genisys import config as config_module
from genisys.connector import ConnectorClient, ConnectorError
from genisys.devconsul import DevConsul
from tests.connector_helpers import DEMO_COMMAND, ConnectorProcess, processes_of, unique
from tests.support import Replica, unique_prefix, wait_until


def https_settings(certificates) -> dict:
    server = certificates["server"]
    return {"genisys": {"tls_cert_file": server.cert_file, "tls_key_file": server.key_file}}


def test_the_api_serves_https_that_verifies_with_the_ca(start_replica, certificates):
    replica = start_replica(https_settings(certificates), ca_file=certificates["server"].ca_file)
    assert replica.url.startswith("https://")
    assert replica.request("GET", "/health").status_code == 200
    assert "serving the API on https://127.0.0.1:" in replica.log()
    with pytest.raises(requests.exceptions.SSLError):  # not signed by a system CA
        requests.get(f"{replica.url}/health", timeout=5)
    with pytest.raises(requests.ConnectionError):  # plain HTTP gets no answer
        requests.get(f"http://127.0.0.1:{replica.port}/health", timeout=5)


def test_a_certificate_that_does_not_load_stops_the_replica_with_one_sentence(
        start_replica, certificates, tmp_path):
    settings = https_settings(certificates)
    settings["genisys"]["tls_key_file"] = str(tmp_path / "missing-key.pem")
    replica = start_replica(settings, wait=False)
    assert replica.process.wait(15) == 1
    assert "cannot serve https on 127.0.0.1:" in replica.log()
    assert "No such file or directory" in replica.log()


@pytest.mark.parametrize("raw, sentence", [
    ({"genisys": {"tls_cert_file": "c.pem"}}, "genisys.tls_cert_file and genisys.tls_key_file "
                                              "go together: set both or neither"),
    ({"consul": {"key_file": "k.pem"}}, "consul.cert_file and consul.key_file go together"),
    ({"consul": {"verify": "perhaps"}}, "consul.verify: 'perhaps' is not true or false"),
])
def test_half_a_tls_configuration_is_refused(raw, sentence):
    with pytest.raises(config_module.ConfigError, match=sentence):
        config_module.build(raw, environ={})


def test_consuls_own_variables_configure_tls_to_consul():
    config = config_module.build({}, environ={
        "CONSUL_HTTP_ADDR": "127.0.0.1:8501", "CONSUL_HTTP_SSL": "true",
        "CONSUL_CACERT": "ca.pem", "CONSUL_CLIENT_CERT": "c.pem", "CONSUL_CLIENT_KEY": "k.pem",
        "CONSUL_HTTP_SSL_VERIFY": "false"})
    consul = config.consul
    assert (consul.scheme, consul.port, consul.ca_file, consul.cert_file, consul.key_file,
            consul.verify) == ("https", 8501, "ca.pem", "c.pem", "k.pem", False)


@pytest.fixture
def https_connector(tmp_path, certificates):
    server = certificates["server"]
    with ConnectorProcess("genisys.connectors.process", "--tls-cert", server.cert_file,
                          "--tls-key", server.key_file, "--log-dir", str(tmp_path / "logs"),
                          log_path=tmp_path / "connector.log") as connector:
        connector.url = f"https://127.0.0.1:{connector.port}"
        yield connector


def test_an_https_connector_is_verified_with_the_configured_ca(https_connector, certificates):
    async def status(ca_file):
        client = ConnectorClient(timeout=5, ca_file=ca_file)
        try:
            return await client.bulk_status(https_connector.url)
        finally:
            client.close()

    assert asyncio.run(status(certificates["server"].ca_file)) == {}
    with pytest.raises(ConnectorError, match="is unreachable: .*certificate"):
        asyncio.run(status(None))  # the system's CAs do not know this one


@pytest.fixture(scope="module")
def tls_consul(certificates):
    """A Consul agent of this module's own: HTTPS with verify_incoming."""
    agent = DevConsul(tls=certificates["server"]).start()
    yield agent
    agent.stop()


def test_consul_refuses_a_client_without_a_certificate(tls_consul, certificates):
    url = f"https://127.0.0.1:{tls_consul.https_port}/v1/status/leader"
    with pytest.raises(requests.ConnectionError):
        requests.get(url, verify=certificates["server"].ca_file, timeout=5)
    client = certificates["client"]
    answer = requests.get(url, verify=client.ca_file, cert=(client.cert_file, client.key_file),
                          timeout=5)
    assert answer.status_code == 200


def test_a_replica_leads_and_scales_over_tls_to_consul_and_to_its_connector(
        tls_consul, certificates, https_connector):
    client, server = certificates["client"], certificates["server"]
    name = unique("tls")
    requests.post(f"{https_connector.url}/service", json={"name": name, "command": DEMO_COMMAND},
                  verify=server.ca_file, timeout=10).raise_for_status()
    replica = Replica(f"127.0.0.1:{tls_consul.https_port}", unique_prefix(),
                      {**https_settings(certificates), "connector": {"ca_file": server.ca_file}},
                      env={"CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": client.ca_file,
                           "CONSUL_CLIENT_CERT": client.cert_file,
                           "CONSUL_CLIENT_KEY": client.key_file},
                      ca_file=server.ca_file)
    try:
        replica.start()
        assert "using Consul at https://127.0.0.1:" in replica.log()
        wait_until(lambda: replica.request("GET", "/health").json()["leader"], 20,
                   "the replica to lead")
        created = replica.request("POST", "/compute", {"name": "tls",
                                                       "connector": https_connector.url})
        assert created.status_code == 201, created.text
        assert replica.request("POST", f"/service/{name}/scale", {"number": 2}
                               ).status_code == 202
        wait_until(lambda: replica.request("GET", f"/service/{name}").json()["observed"]
                   == {"tls": 2}, 20, "2 instances ordered over TLS")
        assert len(processes_of(name)) == 2
        replica.request("POST", f"/service/{name}/scale", {"number": 0})
        wait_until(lambda: processes_of(name) == {}, 20, "the scale to 0")
    finally:
        replica.stop()
