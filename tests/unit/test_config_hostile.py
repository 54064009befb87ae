"""Hostile input to the claim configuration decoder and merge: every input gives a valid config
or ConfigError, never another exception (a fuzzing run found TypeError, RecursionError and
ValueError). Regressions first, then properties over arbitrary JSON-like values (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dranet.bus.messages import pack, unpack
from dranet.config import (
    ConfigError,
    NetworkConfig,
    merge_configs,
    network_config_to_dict,
    parse_network_config,
)
from dranet.config.decode import (
    ETHTOOL_FIELDS,
    INTERFACE_FIELDS,
    NEIGHBOR_FIELDS,
    ROUTE_FIELDS,
    RULE_FIELDS,
    TOP_FIELDS,
    VRF_FIELDS,
)

HUGE = 10**5000  # more digits than Python converts to text (sys.get_int_max_str_digits)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def refused(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_network_config(data)
    return info.value


# ------------------------------------------------------------ regressions (each failed before)
@pytest.mark.parametrize("key", [1, b"tso", None, 1.5, True, HUGE], ids=lambda k: type(k).__name__)
def test_non_string_ethtool_names(key: Any) -> None:
    for section in ("features", "privateFlags"):
        err = refused({"ethtool": {section: {key: True}}})
        assert err.field == f"ethtool.{section}" and "must be strings" in err.reason


def test_msgpack_byte_keys_over_the_bus() -> None:
    body = unpack(pack({"ethtool": {"features": {b"tx-checksumming": True}}}))
    assert refused(body).field == "ethtool.features"


def test_huge_integer_key_at_top() -> None:
    err = refused({HUGE: 1})
    assert err.field == "" and "keys must be strings" in err.reason


@pytest.mark.parametrize(
    "doc",
    [
        {"interface": {"mtu": HUGE}},
        {"interface": {"mtu": -HUGE}},
        {"interface": {"gsoMaxSize": HUGE}},
        {"routes": [{"destination": "10.0.0.0/8", "scope": 253, "table": HUGE}]},
        {"rules": [{"priority": HUGE}]},
        {"interface": {"vrf": {"name": "blue", "table": HUGE}}},
    ],
)
def test_huge_integers(doc: dict[str, Any]) -> None:
    err = refused(doc)
    assert "must be between" in err.reason and "digits" in err.reason


def test_huge_integer_in_json_text() -> None:
    err = refused('{"interface": {"mtu": 1' + "0" * 5000 + "}}")
    assert err.field == "" and "too large" in err.reason


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deep_nesting_in_json_text(depth: int) -> None:
    err = refused('{"interface": ' + "[" * depth + "]" * depth + "}")
    assert err.field == "" and "nested" in err.reason


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deep_nesting_as_object(depth: int) -> None:
    err = refused({"interface": {"vrf": nested(depth)}})
    assert "nested" in err.reason


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deep_nesting_in_merge(depth: int) -> None:
    with pytest.raises(ConfigError) as info:
        merge_configs([{"interface": nested(depth)}, {"interface": nested(depth, 2)}])
    assert "nested" in info.value.reason
    with pytest.raises(ConfigError):
        merge_configs(['{"a": ' + "[" * depth + "]" * depth + "}"])


def test_reasonable_nesting_still_merges() -> None:
    layer = {"profile": "p", "x": nested(8)}
    assert merge_configs([layer]) == layer


# ------------------------------------------------------------ properties
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**32, 2**63, -1, 0, 68, 1280, 1500, 65535, 253, 254]),
    st.sampled_from([1, -1]).map(lambda sign: sign * HUGE),  # hypothesis cannot print HUGE itself
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.sampled_from(
        [
            "eth0",
            "net1",
            "lo",
            "10.0.0.2/24",
            "10.0.0.0/8",
            "10.0.0.1",
            "fd00::2/64",
            "fd00::1",
            "fe80::1",
            "02:00:5e:10:00:01",
            "tso",
            "blue",
            "",
            "eth0\n",
        ]
    ),
)
keys = st.one_of(
    st.sampled_from(
        sorted(
            {*TOP_FIELDS, *INTERFACE_FIELDS, *VRF_FIELDS, *ROUTE_FIELDS, *RULE_FIELDS}
            | {*NEIGHBOR_FIELDS, *ETHTOOL_FIELDS}
        )
    ),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.integers(),
)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


def _object_of(fields: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))


# Schema-shaped documents reach the deep validators (and often decode, so round trips are checked).
flag_maps = st.dictionaries(
    st.one_of(st.sampled_from(["tso", "gro", "rx-checksum"]), keys), json_like, max_size=3
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        "profile": scalars,
        "interface": _object_of(
            INTERFACE_FIELDS,
            st.one_of(
                scalars,
                st.lists(scalars, max_size=3),
                _object_of(VRF_FIELDS, scalars),
            ),
        ),
        "routes": st.lists(_object_of(ROUTE_FIELDS, scalars), max_size=3),
        "rules": st.lists(_object_of(RULE_FIELDS, scalars), max_size=3),
        "neighbors": st.lists(_object_of(NEIGHBOR_FIELDS, scalars), max_size=3),
        "ethtool": _object_of(ETHTOOL_FIELDS, st.one_of(flag_maps, json_like)),
    },
)
# Mostly valid documents (most decode), so the round trips cover every field the encoder writes.
_sizes = st.integers(min_value=1, max_value=524280)
valid_like = st.fixed_dictionaries(
    {},
    optional={
        "profile": st.sampled_from(["", "gold", "whereabouts-profile"]),
        "interface": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["", "eth0", "net1", "a.b-c_d"]),
                "addresses": st.lists(
                    st.sampled_from(["10.0.0.2/24", "10.0.0.3/24", "fd00::2/64", "10.0.0.9/32"]),
                    unique=True,
                    max_size=3,
                ),
                "mtu": st.integers(min_value=1280, max_value=9000),
                "hardwareAddr": st.sampled_from(["02:00:5e:10:00:01", "0A-BB-CC-DD-EE-FF"]),
                "gsoMaxSize": _sizes,
                "groMaxSize": _sizes,
                "gsoIPv4MaxSize": _sizes,
                "groIPv4MaxSize": _sizes,
                "forwarding": st.booleans(),
                "arpIgnore": st.sampled_from([0, 1, 2, 3, 8]),
                "arpAnnounce": st.integers(min_value=0, max_value=2),
                "vrf": st.fixed_dictionaries(
                    {"name": st.sampled_from(["blue", "red"])},
                    optional={"table": st.integers(min_value=1000, max_value=5000)},
                ),
            },
        ),
        "routes": st.lists(
            st.one_of(
                st.builds(
                    lambda n: {"destination": f"10.{n}.0.0/16", "gateway": "10.0.0.1"},
                    st.integers(min_value=1, max_value=250),
                ),
                st.builds(
                    lambda n, table: {"destination": f"192.168.{n}.0/24", "scope": 253, "table": table},
                    st.integers(min_value=0, max_value=255),
                    st.sampled_from([0, 100]),
                ),
            ),
            max_size=3,
        ),
        "rules": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "priority": st.integers(min_value=0, max_value=32767),
                    "source": st.sampled_from(["10.0.0.0/24", "10.1.0.0/16"]),
                    "destination": st.sampled_from(["10.2.0.0/16", "0.0.0.0/0"]),
                    "table": st.integers(min_value=0, max_value=300),
                },
            ),
            max_size=2,
        ),
        "neighbors": st.lists(
            st.builds(
                lambda n: {"destination": f"10.0.0.{n}", "hardwareAddr": "02:00:00:00:00:0a"},
                st.integers(min_value=2, max_value=250),
            ),
            max_size=2,
        ),
        "ethtool": st.fixed_dictionaries(
            {},
            optional={
                "features": st.dictionaries(st.sampled_from(["tso", "gro", "rx-checksum"]), st.booleans()),
                "privateFlags": st.dictionaries(
                    st.sampled_from(["legacy-rx", "disable-fw-lldp"]), st.booleans()
                ),
            },
        ),
    },
)
documents = st.one_of(json_like, config_like, valid_like)
deep = st.builds(
    lambda depth, where: {"interface": {"vrf": nested(depth)}} if where else nested(depth),
    st.integers(min_value=1, max_value=3000),
    st.booleans(),
)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_config_error(data: Any) -> NetworkConfig | None:
    try:
        return parse_network_config(data)
    except ConfigError:
        return None


def check_round_trip(cfg: NetworkConfig) -> None:
    as_dict = network_config_to_dict(cfg)
    assert parse_network_config(as_dict) == cfg
    assert parse_network_config(json.dumps(as_dict)) == cfg
    assert parse_network_config(unpack(pack(as_dict))) == cfg


@PROPERTY
@given(st.one_of(documents, deep))
def test_decode_gives_config_or_config_error(data: Any) -> None:
    cfg = decode_or_config_error(data)
    if cfg is not None:
        check_round_trip(cfg)


@PROPERTY
@given(valid_like)
def test_valid_configs_round_trip(data: dict[str, Any]) -> None:
    cfg = decode_or_config_error(data)
    if cfg is not None:
        check_round_trip(cfg)
        assert network_config_to_dict(parse_network_config(network_config_to_dict(cfg))) == (
            network_config_to_dict(cfg)
        )


@PROPERTY
@given(documents)
def test_decode_over_msgpack_gives_config_or_config_error(data: Any) -> None:
    try:
        wire = unpack(pack(data))
    except (ValueError, TypeError, OverflowError):
        return  # not representable in msgpack (huge ints, int keys): the bus refuses it itself
    cfg = decode_or_config_error(wire)
    if cfg is not None:
        check_round_trip(cfg)


def as_json(doc: Any) -> str:
    try:
        return json.dumps(doc, default=repr)
    except (TypeError, ValueError):  # bytes keys, integers too large to print
        return "{}"


@PROPERTY
@given(st.text(max_size=200) | st.binary(max_size=200) | documents.map(as_json))
def test_decode_of_text_gives_config_or_config_error(text: str | bytes) -> None:
    cfg = decode_or_config_error(text)
    if cfg is not None:
        check_round_trip(cfg)


@PROPERTY
@given(st.lists(st.one_of(documents, deep, st.text(max_size=30)), max_size=4))
def test_merge_then_decode_gives_config_or_config_error(layers: list[Any]) -> None:
    try:
        merged = merge_configs(layers)
    except ConfigError:
        return
    assert isinstance(merged, dict)
    cfg = decode_or_config_error(merged)
    if cfg is not None:
        check_round_trip(cfg)


@PROPERTY
@given(config_like, config_like)
def test_merge_of_valid_configs_keeps_the_later_one(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Merging a decoded config over anything gives that config back where it sets fields."""
    cfg_b = decode_or_config_error(b)
    if cfg_b is None:
        return
    b_dict = network_config_to_dict(cfg_b)
    try:
        merged = merge_configs([a, b_dict])
    except ConfigError:
        return
    for key, value in b_dict.items():
        if not isinstance(value, dict):
            assert merged[key] == value
