import pytest

from gateway import Gateway


@pytest.fixture
def gateway(tmp_path):
    gw = Gateway(tmp_path).start()
    yield gw
    gw.stop()
