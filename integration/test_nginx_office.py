"""The office tier of docs/tiers.md with real nginx: a ``proxy_cache`` in front of the HTTP
cloud store (nginx WebDAV), natively or in the Docker server set.

Between the office and the cloud sits a :class:`~servers.metering.MeteringProxy`: the
cloud's access log. A miss in the office's cache shows there as requests for the manifest
and the packs; a second runner's restore, served by the office, shows none (only the
listings, which the office asks of the cloud every time). Ranged reads and listings are
checked through the cache, before and after it holds the object, and with the cloud gone.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import pytest
from contract import with_tree_plugin
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig
from servers.http import start_http_server
from servers.metering import DOWN, MeteringProxy
from servers.nginx_office import start_office
from tree_project import POINT, TreeProject, make_source, remote_packs, tree_digest

from gaia_core.backends import object_key, pack_key
from gaia_core.errors import BackendError

pytestmark = pytest.mark.remote

CLOUD_TOKEN_ENV, OFFICE_TOKEN_ENV = "GAIA_IT_CLOUD_TOKEN", "GAIA_IT_OFFICE_TOKEN"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    server = start_http_server(tmp_path_factory.mktemp("cloud"), token="cloud-" + uuid.uuid4().hex)
    yield server
    server.stop()
    if hasattr(server, "remove"):
        server.remove()


@pytest.fixture(scope="module")
def relay(cloud):
    """The cloud's access log: every request the office sends it passes here."""
    with MeteringProxy(("127.0.0.1", cloud.port)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory, cloud, relay):
    server = start_office(tmp_path_factory.mktemp("office"), office_token="office-" + uuid.uuid4().hex,
                          cloud_token=cloud.token, upstream=relay.address)
    yield server
    server.stop()
    if hasattr(server, "remove"):
        server.remove()


@pytest.fixture
def root() -> str:
    return f"/gaia-{uuid.uuid4().hex[:12]}"


def backend(url: str, token: str) -> HttpBackend:
    config = HttpConfig.model_validate({"base_url": url, "token_env": "T", "connect_timeout": 2.0,
                                        "stall_timeout": 10.0})
    return HttpBackend("it", config, environ={"T": token})


def tiers_table(cloud, office, root: str) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    table = (f'[checkpoints.backends.http.office]\nbase_url = "{office.url}{root}"\ntoken_env = "{OFFICE_TOKEN_ENV}"\n'
             "read_only = true\n\n"
             f'[checkpoints.backends.http.cloud]\nbase_url = "{cloud.url}{root}"\ntoken_env = "{CLOUD_TOKEN_ENV}"\n')
    return table, {OFFICE_TOKEN_ENV: office.token, CLOUD_TOKEN_ENV: cloud.token}


def reads_of_objects(requests: list[tuple[str, str]]) -> list[str]:
    """The paths of requests for objects (manifests, packs, indexes), not listings."""
    return [path for _, path in requests if not path.split("?", 1)[0].endswith("/")]


def test_a_miss_in_the_office_goes_to_the_cloud_and_the_next_runner_is_served_by_the_office(
        cloud, office, relay, root, gaia_cli, gaia_pm, tmp_path: Path) -> None:
    tree_pm = with_tree_plugin(gaia_pm)
    table, env = tiers_table(cloud, office, root)
    source = make_source(tmp_path / "src", files=16, size=256 << 10)
    producer = TreeProject(tmp_path / "producer", table, env, chain=["http:cloud"])
    producer.write(source, "1")
    producer.run(gaia_cli, tree_pm)
    with backend(f"{cloud.url}{root}", cloud.token) as direct:
        pack_bytes = sum(remote_packs(direct).values())
        [fp] = direct.list_fingerprints(POINT)
    relay.reset()

    first = TreeProject(tmp_path / "first", table, env, chain=["http:office", "http:cloud"])
    first.write(source, "1")
    out = first.run(gaia_cli, tree_pm).output
    missed = relay.reset()
    missed_requests = relay.last_requests
    assert first.builds() == 0 and "via http:office" in out, out
    assert tree_digest(first.out) == tree_digest(source)
    assert any(path.endswith(f"/{fp}/manifest.json") for path in reads_of_objects(missed_requests)), missed_requests
    assert any(path.endswith(".pack") for path in reads_of_objects(missed_requests)), missed_requests
    assert missed[DOWN] >= pack_bytes, "the office's first reads did not go to the cloud"

    second = TreeProject(tmp_path / "second", table, env, chain=["http:office", "http:cloud"])
    second.write(source, "1")
    out = second.run(gaia_cli, tree_pm).output
    served = relay.reset()
    requests = relay.last_requests
    assert second.builds() == 0 and "via http:office" in out, out
    assert tree_digest(second.out) == tree_digest(source)
    print(f"cloud -> office: first runner {missed[DOWN]} B, second runner {served[DOWN]} B "
          f"({pack_bytes} B of packs); second runner's requests upstream: {requests}")
    assert reads_of_objects(requests) == [], f"the office asked the cloud for objects it holds: {requests}"
    assert served[DOWN] < 0.05 * pack_bytes


def test_ranged_reads_listings_and_misses_through_the_office_cache(cloud, office, relay, root,
                                                                    tmp_path: Path) -> None:
    data = os.urandom(20 << 20)  # more than two 8 MiB slices
    (tmp_path / "pack").write_bytes(data)
    key, manifest = pack_key("a" * 64 + ".pack"), object_key("p", "f" * 64, "manifest.json")
    ranges = [(0, 100), ((8 << 20) - 1000, 2000), ((20 << 20) - 10, 100), (12345, 5 << 20)]
    with backend(f"{cloud.url}{root}", cloud.token) as direct, backend(f"{office.url}{root}", office.token) as via:
        direct.upload(key, tmp_path / "pack")
        relay.reset()
        for offset, length in ranges:  # the cache is empty: slices come from the cloud
            assert bytes(via.read_range(key, offset, length)) == data[offset:offset + length]
        assert relay.requests, "the office served ranges it never fetched"
        relay.reset()
        for offset, length in ranges:  # now from the cache
            assert bytes(via.read_range(key, offset, length)) == data[offset:offset + length]
        whole = io.BytesIO()
        via.download(key, whole)
        assert whole.getvalue() == data
        assert reads_of_objects(relay.requests) == [], relay.requests

        # a miss is not cached: an object published a moment later is found at once
        assert via.exists(manifest) is False
        (tmp_path / "manifest.json").write_text("{}")
        direct.publish(manifest, tmp_path / "manifest.json")
        assert via.exists(manifest) is True and via.read_small(manifest, 100) == b"{}"

        # a listing follows the cloud (a copy lives one second)
        second = pack_key("b" * 64 + ".pack")
        direct.upload(second, tmp_path / "manifest.json")
        deadline = time.monotonic() + 5
        while second not in {e.key for e in via.list_files("packs")}:
            assert time.monotonic() < deadline, "the office kept serving an old listing"
            time.sleep(0.2)

        with pytest.raises(BackendError, match="403"):  # gaia never writes here; nginx refuses it too
            via.upload(pack_key("c" * 64 + ".pack"), tmp_path / "manifest.json")

        relay.stop()  # the cloud unreachable: the office serves what it holds
        try:
            offset, length = ranges[1]
            assert bytes(via.read_range(key, offset, length)) == data[offset:offset + length]
            assert key in {e.key for e in via.list_files("packs")}
        finally:
            relay.start()
