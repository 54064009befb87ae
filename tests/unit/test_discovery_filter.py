import pytest
from dranet.services.discovery.filter import DEFAULT_FILTER, DeviceFilter, FilterError


def test_default_hides_veth_only() -> None:
    f = DeviceFilter(DEFAULT_FILTER)
    assert not f.allows({"dra.net/type": "veth"})
    assert f.allows({"dra.net/type": "macvlan"})
    assert f.allows({"dra.net/pciAddress": "0000:00:01.0"})  # no type: kept


def test_true_offers_everything() -> None:
    f = DeviceFilter("true")
    assert f.allows({"dra.net/type": "veth"})


def test_upstream_style_expressions() -> None:
    f = DeviceFilter('attributes["dra.net/virtual"].BoolValue == false')
    assert f.allows({"dra.net/virtual": False})
    assert not f.allows({"dra.net/virtual": True})
    f = DeviceFilter('attributes["dra.net/mtu"].IntValue >= 9000')
    assert f.allows({"dra.net/mtu": 9000}) and not f.allows({"dra.net/mtu": 1500})


def test_evaluation_error_keeps_device() -> None:
    f = DeviceFilter('attributes["dra.net/missing"].StringValue == "x"')
    assert f.allows({})


def test_non_bool_result_hides() -> None:
    assert not DeviceFilter("1").allows({})


def test_bad_expression_is_a_typed_error() -> None:
    with pytest.raises(FilterError, match="does not compile"):
        DeviceFilter("(((")
