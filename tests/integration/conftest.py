import pytest

from clickhouse import ClickHouse
from gateway import Gateway


@pytest.fixture
def gateway(tmp_path):
    gw = Gateway(tmp_path).start()
    yield gw
    gw.stop()


@pytest.fixture
def clickhouse(tmp_path):
    """A clickhouse-server (Debian's 18.16) of the test's own, stopped at its end."""
    ch = ClickHouse(tmp_path)
    try:
        yield ch.start()
    finally:
        ch.stop()
